//! SOPS with age: the identity the cluster decrypts with, and whether the repository is encrypted
//! for it. Pure logic: callers hand in texts (the identity, `.sops.yaml`, encrypted files) and get
//! values and findings back.
//!
//! Flux's kustomize-controller decrypts a SOPS file when one of the file's age recipients matches
//! an identity in the Kustomization's decryption Secret. The mistake this module exists to catch
//! is a repository encrypted for another key than the one given to the cluster: sops records each
//! file's recipients in its `sops:` metadata in plain text, so that can be checked offline.

use std::fmt;
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};

use crate::age_pq;
use crate::diag::{Code, Diagnostic, Position};

/// What every age X25519 identity starts with (age writes it upper-case).
pub const IDENTITY_PREFIX: &str = "AGE-SECRET-KEY-1";
/// The same in lower case: bech32 may be written so, and a hand-copied identity may be.
pub const IDENTITY_PREFIX_LOWER: &str = "age-secret-key-1";
/// What both kinds of age identity start with: X25519 (`AGE-SECRET-KEY-1…`) and post-quantum
/// (`AGE-SECRET-KEY-PQ-1…`).
pub const IDENTITY_STEM: &str = "AGE-SECRET-KEY-";
/// What every age plugin identity starts with (`AGE-PLUGIN-YUBIKEY-1…`).
const PLUGIN_PREFIX: &str = "AGE-PLUGIN-";

/// An age identity, X25519 or post-quantum (ML-KEM-768 with X25519, age v1.3), and its public
/// recipient. `Debug` shows the recipient only; the identity is reachable through
/// [`AgeIdentity::expose`] alone.
#[derive(Clone)]
pub struct AgeIdentity {
    secret: SecretString,
    recipient: Recipient,
}

#[derive(Clone, PartialEq, Eq)]
enum Recipient {
    X25519(age::x25519::Recipient),
    /// `age1pq1…`, lower-case, as age prints it.
    PostQuantum(String),
}

impl AgeIdentity {
    /// Parses one identity (surrounding whitespace ignored). The error never holds the value.
    pub fn parse(value: &str) -> Result<AgeIdentity, IdentityError> {
        let value = value.trim();
        let upper = value.to_ascii_uppercase();
        if upper.starts_with(PLUGIN_PREFIX) {
            return Err(IdentityError::Plugin(plugin_name(value)));
        }
        if age::x25519::Recipient::from_str(value).is_ok()
            || age_pq::parse_recipient(value).is_some()
        {
            return Err(IdentityError::Recipient);
        }
        if upper.starts_with(age_pq::IDENTITY_PREFIX) {
            let identity = age_pq::parse_identity(value).map_err(|_| IdentityError::Malformed)?;
            return Ok(AgeIdentity {
                secret: identity.canonical,
                recipient: Recipient::PostQuantum(identity.recipient),
            });
        }
        if !upper.starts_with(IDENTITY_PREFIX) {
            return Err(IdentityError::NotAnIdentity);
        }
        let identity =
            age::x25519::Identity::from_str(value).map_err(|_| IdentityError::Malformed)?;
        Ok(AgeIdentity {
            // age's own spelling, so that the cluster gets the canonical form.
            secret: identity.to_string(),
            recipient: Recipient::X25519(identity.to_public()),
        })
    }

    /// The identity, for the cluster Secret, the output filter and the leak scanner only.
    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }

    pub fn secret(&self) -> &SecretString {
        &self.secret
    }

    /// True for a post-quantum identity (`AGE-SECRET-KEY-PQ-1…`).
    pub fn is_post_quantum(&self) -> bool {
        matches!(self.recipient, Recipient::PostQuantum(_))
    }

    /// The public recipient, `age1...` or `age1pq1...` (1959 characters).
    pub fn recipient(&self) -> String {
        match &self.recipient {
            Recipient::X25519(r) => r.to_string(),
            Recipient::PostQuantum(r) => r.clone(),
        }
    }

    /// The recipient as messages name it: whole for X25519, its ends for a post-quantum one.
    pub fn recipient_shown(&self) -> String {
        match &self.recipient {
            Recipient::X25519(r) => r.to_string(),
            Recipient::PostQuantum(r) => age_pq::shorten(r),
        }
    }

    /// True when `recipients` (as a SOPS file or rule lists them) include this identity's.
    pub fn is_among(&self, recipients: &[String]) -> bool {
        recipients.iter().any(|r| {
            let r = r.trim();
            match &self.recipient {
                Recipient::X25519(own) => {
                    age::x25519::Recipient::from_str(r).is_ok_and(|parsed| parsed == *own)
                }
                // One public key has one Bech32 spelling, up to case.
                Recipient::PostQuantum(own) => r.eq_ignore_ascii_case(own),
            }
        })
    }
}

impl fmt::Debug for AgeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgeIdentity({}, [REDACTED])", self.recipient_shown())
    }
}

/// The plugin an `AGE-PLUGIN-NAME-1…` identity is for (`age-plugin-name`), from the part before
/// Bech32's last `1`, which holds no key material. `None` when that is not a plausible name.
fn plugin_name(value: &str) -> Option<String> {
    let kind = &value[..value.rfind('1')?];
    let name = kind
        .get(PLUGIN_PREFIX.len()..)?
        .strip_suffix('-')?
        .to_ascii_lowercase();
    let plausible = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'));
    plausible.then(|| format!("age-plugin-{name}"))
}

/// Why a value is not a usable age identity. No variant carries the value (a plugin's name is
/// the public part before the key material).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("is not an age identity (one starts with `AGE-SECRET-KEY-1` or `AGE-SECRET-KEY-PQ-1`)")]
    NotAnIdentity,
    #[error("starts like an age identity but is not one (a character is missing or mistyped)")]
    Malformed,
    #[error("is an age recipient (the public key), not the identity the cluster decrypts with")]
    Recipient,
    #[error("is an identity of {}, which Flux's kustomize-controller cannot use", plugin_shown(.0.as_deref()))]
    Plugin(Option<String>),
}

/// A plugin as messages name it: `the age plugin `age-plugin-NAME``, or `an age plugin`.
pub fn plugin_shown(name: Option<&str>) -> String {
    match name {
        Some(name) => format!("the age plugin `{name}`"),
        None => "an age plugin".to_string(),
    }
}

/// The identities of an identity file (sops' `keys.txt`, `SOPS_AGE_KEY`): one per line, `#`
/// comments and blank lines skipped. Each entry carries its 1-based line.
pub fn parse_identities(text: &str) -> Vec<(usize, Result<AgeIdentity, IdentityError>)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| (i + 1, AgeIdentity::parse(l)))
        .collect()
}

/// One creation rule of `.sops.yaml`: where it applies and which age recipients it encrypts for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// 1-based position in `creation_rules`.
    pub number: usize,
    pub path_regex: Option<String>,
    /// Every age recipient of the rule: `age:` (a comma-separated string or a list) and the
    /// `age:` lists of `key_groups` (with their `merge`s).
    pub recipients: Vec<String>,
}

/// Why a `.sops.yaml` cannot be read as sops would read it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// The YAML parser's message (with its position).
    #[error("it is not valid YAML ({0})")]
    NotYaml(String),
    #[error("`creation_rules` is not a list")]
    NotAList,
    #[error("creation rule {0} is not a mapping")]
    RuleNotAMapping(usize),
    #[error("`age` of creation rule {0} lists a non-string")]
    AgeNotAString(usize),
    #[error("`age` of creation rule {0} is neither a string nor a list")]
    AgeNeitherStringNorList(usize),
}

/// Reads the creation rules of a `.sops.yaml`.
pub fn creation_rules(text: &str) -> Result<Vec<Rule>, RulesError> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| RulesError::NotYaml(e.to_string()))?;
    let rules = match doc.get("creation_rules") {
        None | Some(serde_yaml::Value::Null) => return Ok(Vec::new()),
        Some(serde_yaml::Value::Sequence(rules)) => rules,
        Some(_) => return Err(RulesError::NotAList),
    };
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let number = i + 1;
            if !rule.is_mapping() {
                return Err(RulesError::RuleNotAMapping(number));
            }
            let mut recipients = Vec::new();
            if let Some(age) = rule.get("age") {
                match age {
                    serde_yaml::Value::String(s) => recipients.extend(comma_list(s)),
                    serde_yaml::Value::Sequence(items) => {
                        for item in items {
                            let s = item.as_str().ok_or(RulesError::AgeNotAString(number))?;
                            recipients.push(s.trim().to_string());
                        }
                    }
                    serde_yaml::Value::Null => {}
                    _ => {
                        return Err(RulesError::AgeNeitherStringNorList(number));
                    }
                }
            }
            if let Some(groups) = rule.get("key_groups").and_then(|g| g.as_sequence()) {
                for group in groups {
                    group_recipients(group, &mut recipients);
                }
            }
            Ok(Rule {
                number,
                path_regex: rule
                    .get("path_regex")
                    .and_then(|p| p.as_str())
                    .map(str::to_string),
                recipients,
            })
        })
        .collect()
}

fn comma_list(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
}

/// The age recipients of a key group, its `merge`d groups included.
fn group_recipients(group: &serde_yaml::Value, out: &mut Vec<String>) {
    if let Some(age) = group.get("age").and_then(|a| a.as_sequence()) {
        out.extend(age.iter().filter_map(|r| r.as_str()).map(str::to_string));
    }
    if let Some(merged) = group.get("merge").and_then(|m| m.as_sequence()) {
        for g in merged {
            group_recipients(g, out);
        }
    }
}

/// The file formats sops encrypts that a Kustomization can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Yaml,
    Json,
    Dotenv,
}

impl FileFormat {
    /// The format of a file, by its name as sops decides it.
    pub fn of(path: &str) -> Option<FileFormat> {
        let name = path.rsplit('/').next().unwrap_or(path);
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            Some(FileFormat::Yaml)
        } else if name.ends_with(".json") {
            Some(FileFormat::Json)
        } else if name.ends_with(".env") {
            Some(FileFormat::Dotenv)
        } else {
            None
        }
    }
}

/// What the `sops:` metadata of an encrypted file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encrypted {
    /// The age recipients (`sops.age[].recipient` and those of `sops.key_groups`).
    pub recipients: Vec<String>,
    /// The line the metadata starts on, when it can be told.
    pub line: Option<usize>,
}

/// The SOPS metadata of a file, or `None` when it is not a SOPS-encrypted file. A file counts as
/// encrypted when its `sops` entry has sops' bookkeeping (`mac` or `lastmodified`), so a Helm
/// values file with a `sops:` key of its own is not mistaken for one.
pub fn encrypted(format: FileFormat, text: &str) -> Option<Encrypted> {
    match format {
        FileFormat::Yaml => {
            let mut recipients = Vec::new();
            let mut found = false;
            for doc in serde_yaml::Deserializer::from_str(text) {
                let Ok(value) = <serde_yaml::Value as serde::Deserialize>::deserialize(doc) else {
                    // sops writes well-formed YAML; what is not is not a sops file.
                    return None;
                };
                if let Some(meta) = value.get("sops").filter(|m| is_sops_metadata_yaml(m)) {
                    found = true;
                    metadata_recipients_yaml(meta, &mut recipients);
                }
            }
            found.then(|| Encrypted {
                recipients,
                line: line_starting(text, "sops:"),
            })
        }
        FileFormat::Json => {
            let value: serde_json::Value = serde_json::from_str(text).ok()?;
            let meta = value.get("sops")?;
            if !(meta.get("mac").is_some() || meta.get("lastmodified").is_some()) {
                return None;
            }
            // The same tree as YAML's: reuse one walker through serde_yaml's value.
            let meta: serde_yaml::Value = serde_yaml::to_value(meta).ok()?;
            let mut recipients = Vec::new();
            metadata_recipients_yaml(&meta, &mut recipients);
            Some(Encrypted {
                recipients,
                line: text
                    .lines()
                    .position(|l| l.trim_start().starts_with("\"sops\""))
                    .map(|i| i + 1),
            })
        }
        FileFormat::Dotenv => {
            let mut found = false;
            let mut recipients = Vec::new();
            for line in text.lines() {
                let Some((key, value)) = line.split_once('=') else {
                    continue;
                };
                let key = key.trim();
                if key == "sops_mac" || key == "sops_lastmodified" {
                    found = true;
                }
                // sops flattens `sops.age[0].recipient` to `sops_age__list_0__map_recipient`,
                // and key groups to `sops_key_groups__list_0__map_age__list_0__map_recipient`.
                if key.starts_with("sops_")
                    && key.contains("age__list_")
                    && key.ends_with("__map_recipient")
                {
                    recipients.push(value.trim().to_string());
                }
            }
            found.then(|| Encrypted {
                recipients,
                line: text
                    .lines()
                    .position(|l| l.starts_with("sops_"))
                    .map(|i| i + 1),
            })
        }
    }
}

fn is_sops_metadata_yaml(meta: &serde_yaml::Value) -> bool {
    meta.get("mac").is_some() || meta.get("lastmodified").is_some()
}

fn metadata_recipients_yaml(meta: &serde_yaml::Value, out: &mut Vec<String>) {
    let from_list = |list: Option<&serde_yaml::Value>, out: &mut Vec<String>| {
        for entry in list.and_then(|l| l.as_sequence()).into_iter().flatten() {
            if let Some(r) = entry.get("recipient").and_then(|r| r.as_str()) {
                out.push(r.to_string());
            }
        }
    };
    from_list(meta.get("age"), out);
    for group in meta
        .get("key_groups")
        .and_then(|g| g.as_sequence())
        .into_iter()
        .flatten()
    {
        from_list(group.get("age"), out);
    }
}

fn line_starting(text: &str, prefix: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.starts_with(prefix))
        .map(|i| i + 1)
}

/// What the repository says about age: its creation rules and encrypted files, each with the
/// file (relative to the work tree) it came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// `.sops.yaml` files that could not be read, with the reason.
    pub unreadable_configs: Vec<(String, RulesError)>,
    pub rules: Vec<(String, Rule)>,
    pub files: Vec<(String, Encrypted)>,
}

impl Inventory {
    /// Every recipient list the repository holds (rules and files), for choosing an identity.
    fn recipient_sets(&self) -> impl Iterator<Item = &[String]> {
        self.rules
            .iter()
            .map(|(_, r)| r.recipients.as_slice())
            .chain(self.files.iter().map(|(_, f)| f.recipients.as_slice()))
            .filter(|r| !r.is_empty())
    }
}

/// Of several identities (sops' `keys.txt` may list many), the one the repository is encrypted
/// for: the one among the most recipient lists, the first on a tie (and with no lists at all).
pub fn choose<'a>(candidates: &'a [AgeIdentity], inventory: &Inventory) -> Option<&'a AgeIdentity> {
    let mut best: Option<(&AgeIdentity, usize)> = None;
    for c in candidates {
        let score = inventory
            .recipient_sets()
            .filter(|set| c.is_among(set))
            .count();
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((c, score));
        }
    }
    best.map(|(c, _)| c)
}

/// The findings about the repository for the identity the cluster will get.
pub fn check(identity: &AgeIdentity, inventory: &Inventory) -> Vec<Diagnostic> {
    let recipient = identity.recipient_shown();
    // What a hint tells the user to add: an X25519 recipient fits in a hint, a post-quantum one
    // (1959 characters) is printed by `age-keygen -y`.
    let to_add = if identity.is_post_quantum() {
        format!("the identity's recipient `{recipient}` (`age-keygen -y` prints it whole)")
    } else {
        format!("`{recipient}`")
    };
    let mut out = Vec::new();
    for (file, reason) in &inventory.unreadable_configs {
        out.push(
            Diagnostic::error(
                Code::SopsConfigInvalid,
                format!("`{file}` cannot be read as a sops configuration: {reason}"),
            )
            .in_file(file)
            .with_hint("fix it so that `sops` can use it; see the creation rules in sops' README"),
        );
    }
    for (file, rule) in &inventory.rules {
        let which = format!("creation rule {}", rule.number);
        let applies = match &rule.path_regex {
            Some(re) => format!(" (the rule for `path_regex: {re}`)"),
            None => String::new(),
        };
        if rule.recipients.is_empty() {
            out.push(
                Diagnostic::warning(
                    Code::SopsRuleRecipient,
                    format!("{which} of `{file}` has no age recipient, so files it encrypts are not for the cluster's age identity"),
                )
                .in_file(file)
                .with_hint(if identity.is_post_quantum() {
                    format!("add {to_add} to the rule's `age:`{applies} if Flux applies those files")
                } else {
                    format!("add `age: {recipient}` to the rule{applies} if Flux applies those files")
                }),
            );
        } else if !identity.is_among(&rule.recipients) {
            out.push(
                Diagnostic::error(
                    Code::SopsRuleRecipient,
                    format!("{which} of `{file}` does not encrypt for `{recipient}`, the cluster's age identity; the cluster could not decrypt the files it encrypts"),
                )
                .in_file(file)
                .with_hint(format!("add {to_add} to its `age:`{applies}, or give the cluster the identity it encrypts for")),
            );
        }
    }
    for (file, enc) in &inventory.files {
        if identity.is_among(&enc.recipients) {
            continue;
        }
        let message = if enc.recipients.is_empty() {
            format!(
                "`{file}` is encrypted with SOPS for no age recipient; the cluster could not decrypt it"
            )
        } else {
            format!(
                "`{file}` is encrypted with SOPS for other age recipients than `{recipient}`; the cluster could not decrypt it"
            )
        };
        let d = Diagnostic::error(Code::SopsFileRecipient, message).with_hint(format!(
            "add the recipient to `.sops.yaml` and run `sops updatekeys {file}`"
        ));
        out.push(match enc.line {
            Some(line) => d.at(
                file,
                Position {
                    line,
                    column: 1,
                    width: 4,
                },
            ),
            None => d.in_file(file),
        });
    }
    out
}

/// When a Kustomization's failure message is kustomize-controller's decryption error, what to
/// do about it. Its words: "cannot get sops-age SOPS age decryption Secret ..." (the Secret is
/// missing) and "decryption failed for '...'" (no identity in it matches the file's recipients).
pub fn decryption_failure_hint(message: &str) -> Option<&'static str> {
    let lower = message.to_lowercase();
    if lower.contains("decryption secret") {
        Some(
            "the decryption Secret `flux-system/sops-age` is missing or unreadable: run `homelab-flux bootstrap` with `decryption: sops` to restore it",
        )
    } else if lower.contains("decrypt") {
        Some(
            "the cluster's age identity cannot decrypt a file of the repository: run `homelab-flux validate --offline` in it to see which file is encrypted for which recipient",
        )
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> AgeIdentity {
        AgeIdentity::parse(
            age::x25519::Identity::generate()
                .to_string()
                .expose_secret(),
        )
        .unwrap()
    }

    #[test]
    fn an_identity_gives_its_recipient_and_debug_hides_it() {
        let id = identity();
        assert!(id.recipient().starts_with("age1"));
        let shown = format!("{id:?}");
        assert!(!shown.contains(&id.expose()[16..]), "{shown}");
        assert!(shown.contains(&id.recipient()), "{shown}");
        // Lower-case input is the same identity.
        let lower = AgeIdentity::parse(&id.expose().to_ascii_lowercase()).unwrap();
        assert_eq!(lower.recipient(), id.recipient());
        assert_eq!(lower.expose(), id.expose());
    }

    #[test]
    fn malformed_identities_are_refused_without_the_value() {
        assert_eq!(
            AgeIdentity::parse("ghp_x").unwrap_err(),
            IdentityError::NotAnIdentity
        );
        // One character changed: bech32's checksum catches it.
        let id = identity();
        let mut changed: Vec<char> = id.expose().chars().collect();
        changed[30] = if changed[30] == 'Q' { 'P' } else { 'Q' };
        assert_eq!(
            AgeIdentity::parse(&changed.into_iter().collect::<String>()).unwrap_err(),
            IdentityError::Malformed
        );
        let plugin = AgeIdentity::parse("AGE-PLUGIN-YUBIKEY-1QYQSZQGPQYQSZQGP").unwrap_err();
        assert_eq!(
            plugin,
            IdentityError::Plugin(Some("age-plugin-yubikey".into()))
        );
        assert!(
            plugin
                .to_string()
                .contains("the age plugin `age-plugin-yubikey`"),
            "{plugin}"
        );
        assert_eq!(
            AgeIdentity::parse("AGE-PLUGIN-1QYQSZQ").unwrap_err(),
            IdentityError::Plugin(None)
        );
        let id = identity();
        let mut broken = id.expose().to_string();
        broken.truncate(broken.len() - 5);
        assert_eq!(
            AgeIdentity::parse(&broken).unwrap_err(),
            IdentityError::Malformed
        );
    }

    #[test]
    fn an_identity_file_lists_several_and_skips_comments() {
        let (a, b) = (identity(), identity());
        let text = format!(
            "# created: 2026-01-01\n# public key: {}\n{}\n\n# another\n{}\nnot a key\n",
            a.recipient(),
            a.expose(),
            b.expose()
        );
        let parsed = parse_identities(&text);
        let lines: Vec<usize> = parsed.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![3, 6, 7]);
        assert_eq!(parsed[1].1.as_ref().unwrap().recipient(), b.recipient());
        assert_eq!(
            parsed[2].1.as_ref().unwrap_err(),
            &IdentityError::NotAnIdentity
        );
    }

    #[test]
    fn creation_rules_read_every_form_of_age_recipients() {
        let text = "\
keys:
  - &me age1aaa
creation_rules:
  - path_regex: ^clusters/.*\\.yaml$
    age: >-
      age1one,
      age1two
  - age: [age1three]
  - key_groups:
      - age: [*me]
        merge:
          - age: [age1four]
  - pgp: ABC
";
        let rules = creation_rules(text).unwrap();
        let all: Vec<Vec<String>> = rules.iter().map(|r| r.recipients.clone()).collect();
        assert_eq!(
            all,
            vec![
                vec!["age1one".to_string(), "age1two".to_string()],
                vec!["age1three".to_string()],
                vec!["age1aaa".to_string(), "age1four".to_string()],
                vec![],
            ]
        );
        assert_eq!(rules[0].path_regex.as_deref(), Some("^clusters/.*\\.yaml$"));
        assert!(creation_rules("creation_rules: 3\n").is_err());
        assert!(creation_rules("creation_rules: [\n").is_err());
        assert_eq!(creation_rules("{}\n").unwrap(), vec![]);
    }

    #[test]
    fn sops_metadata_is_read_from_yaml_json_and_dotenv() {
        let yaml = "apiVersion: v1\nkind: Secret\nstringData:\n  a: ENC[AES256_GCM,data:x]\nsops:\n  age:\n    - recipient: age1one\n      enc: |\n        x\n  lastmodified: \"2026-01-01T00:00:00Z\"\n  mac: ENC[x]\n  version: 3.13.2\n";
        let json = "{\n  \"a\": \"ENC[x]\",\n  \"sops\": {\n    \"key_groups\": [{\"age\": [{\"recipient\": \"age1two\", \"enc\": \"x\"}]}],\n    \"mac\": \"ENC[x]\"\n  }\n}\n";
        let env = "A=ENC[x]\nsops_age__list_0__map_recipient=age1three\nsops_mac=ENC[x]\n";
        for (format, text, recipient, line) in [
            (FileFormat::Yaml, yaml, "age1one", 5),
            (FileFormat::Json, json, "age1two", 3),
            (FileFormat::Dotenv, env, "age1three", 2),
        ] {
            assert_eq!(
                encrypted(format, text),
                Some(Encrypted {
                    recipients: vec![recipient.to_string()],
                    line: Some(line)
                }),
                "{format:?}"
            );
        }
        // A values file with a `sops:` key of its own, and plain files, are not SOPS files.
        assert_eq!(
            encrypted(FileFormat::Yaml, "sops:\n  enabled: true\n"),
            None
        );
        assert_eq!(encrypted(FileFormat::Json, "{\"a\": 1}"), None);
        assert_eq!(encrypted(FileFormat::Dotenv, "A=b\n"), None);
        assert_eq!(encrypted(FileFormat::Yaml, "a: [\n"), None);
        assert_eq!(FileFormat::of("x/secret.enc.yaml"), Some(FileFormat::Yaml));
        assert_eq!(FileFormat::of("x/.env"), Some(FileFormat::Dotenv));
        assert_eq!(FileFormat::of("x/README.md"), None);
    }

    #[test]
    fn decryption_failures_are_told_apart_from_other_failures() {
        let missing = "cannot get sops-age SOPS age decryption Secret 'flux-system/sops-age': secrets \"sops-age\" not found";
        assert!(
            decryption_failure_hint(missing)
                .unwrap()
                .contains("missing")
        );
        let wrong =
            "decryption failed for 'Secret/homelab-sops': failed to decrypt sops data key with age";
        assert!(
            decryption_failure_hint(wrong)
                .unwrap()
                .contains("validate --offline")
        );
        assert_eq!(
            decryption_failure_hint("kustomization path not found"),
            None
        );
    }

    #[test]
    fn the_identity_the_repository_is_encrypted_for_is_chosen() {
        let (a, b) = (identity(), identity());
        let inventory = Inventory {
            files: vec![(
                "s.yaml".into(),
                Encrypted {
                    recipients: vec![b.recipient().to_ascii_uppercase()],
                    line: None,
                },
            )],
            ..Inventory::default()
        };
        let candidates = [a.clone(), b.clone()];
        assert_eq!(
            choose(&candidates, &inventory).unwrap().recipient(),
            b.recipient()
        );
        assert_eq!(
            choose(&candidates, &Inventory::default())
                .unwrap()
                .recipient(),
            a.recipient()
        );
        assert!(check(&b, &inventory).is_empty());
        let found = check(&a, &inventory);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].code, Code::SopsFileRecipient);
        assert!(found[0].message.contains("could not decrypt"));
        assert!(!format!("{found:?}").contains(&a.expose()[16..]));
    }

    /// A post-quantum identity and its recipient, made by `age-keygen -pq` and `-y` of age
    /// v1.3.2 (test-only vectors).
    fn pq(n: usize) -> (AgeIdentity, String) {
        let text = include_str!("../tests/fixtures/age-pq/vectors.txt");
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        (
            AgeIdentity::parse(lines[2 * n]).unwrap(),
            lines[2 * n + 1].to_string(),
        )
    }

    #[test]
    fn a_post_quantum_identity_gives_its_recipient_and_debug_hides_it() {
        let (id, recipient) = pq(0);
        assert!(id.is_post_quantum());
        assert!(!identity().is_post_quantum());
        assert_eq!(id.recipient(), recipient);
        assert!(id.expose().starts_with("AGE-SECRET-KEY-PQ-1"));
        let shown = format!("{id:?}");
        assert!(!shown.contains(&id.expose()[19..]), "{shown}");
        assert!(
            !shown.contains(&id.expose()[19..].to_ascii_lowercase()),
            "{shown}"
        );
        assert!(shown.contains(&id.recipient_shown()), "{shown}");
        assert!(shown.len() < 80, "{shown}");
        // Its recipient is refused as an identity, in either case.
        for r in [recipient.clone(), recipient.to_ascii_uppercase()] {
            assert_eq!(
                AgeIdentity::parse(&r).unwrap_err(),
                IdentityError::Recipient
            );
        }
        // A mistyped one is malformed, not "not an identity".
        let mut changed: Vec<char> = id.expose().chars().collect();
        changed[40] = if changed[40] == 'Q' { 'P' } else { 'Q' };
        assert_eq!(
            AgeIdentity::parse(&changed.into_iter().collect::<String>()).unwrap_err(),
            IdentityError::Malformed
        );
    }

    #[test]
    fn both_kinds_are_told_apart_in_mixed_recipient_lists() {
        let (pq_a, rec_a) = pq(0);
        let (pq_b, _) = pq(1);
        let x = identity();
        let mixed = vec![x.recipient(), format!(" {} ", rec_a.to_ascii_uppercase())];
        assert!(pq_a.is_among(&mixed));
        assert!(x.is_among(&mixed));
        assert!(!pq_b.is_among(&mixed));
        assert!(!identity().is_among(&mixed));
        // A recipient cut short is not the identity's.
        assert!(!pq_a.is_among(&[rec_a[..1900].to_string()]));
    }

    #[test]
    fn the_post_quantum_identity_is_chosen_when_the_repository_is_encrypted_for_it() {
        let x = identity();
        let (pq_id, recipient) = pq(2);
        let inventory = Inventory {
            rules: vec![(
                ".sops.yaml".into(),
                Rule {
                    number: 1,
                    path_regex: None,
                    recipients: vec![recipient.clone()],
                },
            )],
            files: vec![(
                "s.yaml".into(),
                Encrypted {
                    recipients: vec![recipient],
                    line: Some(3),
                },
            )],
            ..Inventory::default()
        };
        // X25519 first, as in a keys.txt that had it before: the repository decides.
        let candidates = [x.clone(), pq_id.clone()];
        assert!(choose(&candidates, &inventory).unwrap().is_post_quantum());
        assert!(check(&pq_id, &inventory).is_empty());
        // The X25519 identity is not among them: each finding names its file and the short
        // recipient, and its hint says where the whole one comes from.
        let found = check(&x, &inventory);
        assert_eq!(found.len(), 2);
        assert!(found[0].message.contains("creation rule 1 of `.sops.yaml`"));
        let (other, _) = pq(3);
        let found = check(&other, &inventory);
        assert_eq!(
            found.iter().map(|d| d.code).collect::<Vec<_>>(),
            [Code::SopsRuleRecipient, Code::SopsFileRecipient]
        );
        let short = other.recipient_shown();
        assert!(
            found[1].message.contains(&format!(
                "`s.yaml` is encrypted with SOPS for other age recipients than `{short}`"
            )),
            "{}",
            found[1].message
        );
        for d in &found {
            assert!(d.message.len() < 240, "{}", d.message);
            let hint = d.hint.as_deref().unwrap_or_default();
            assert!(hint.len() < 240, "{hint}");
        }
        assert!(
            found[0]
                .hint
                .as_deref()
                .unwrap()
                .contains("`age-keygen -y` prints it whole")
        );
        assert!(!format!("{found:?}").contains(&other.expose()[19..]));
    }
}
