//! The layers of `src/` (see the module map in `src/lib.rs`): every `crate::` import of a file
//! points at its own layer or one below, the decisions never import an outside system, and no
//! files import each other in a circle. Read from the source text, as a reviewer would.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top to bottom. A module may import from its own layer or a lower one.
const LAYERS: &[(&str, &[&str])] = &[
    ("face", &["lib", "cli"]),
    ("commands", &["cmd"]),
    ("output", &["output"]),
    ("decisions", &["plan", "step", "online", "online_app"]),
    (
        "outside systems",
        &[
            "config",
            "github",
            "git",
            "git_remote",
            "cluster",
            "manifests",
            "http",
        ],
    ),
    (
        "values",
        &[
            "settings",
            "facts",
            "flux",
            "health",
            "crd_versions",
            "sops",
            "token",
            "token_host",
            "repo_url",
            "branch",
            "repo_path",
            "keys",
            "diag",
            "text",
            "chain",
            "ssh_url",
            "pkt_line",
            "age_pq",
            "app_key",
        ],
    ),
];

/// The decisions are pure: they read what the outside systems report as plain values.
const DECISIONS: &str = "decisions";
const SYSTEMS: &str = "outside systems";

/// Every `.rs` file of `src/` as its module path (`cmd::bootstrap::wait`), with its non-test
/// text, comments left out.
fn modules() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let text = match text.find("#[cfg(test)]\nmod tests") {
                Some(i) => &text[..i],
                None => &text[..],
            };
            let code: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .map(|l| format!("{l}\n"))
                .collect();
            out.insert(parts.join("::"), code);
        }
    }
    out
}

/// The modules of the crate that `code` (the text of module `me`) names through `crate::` or
/// `super::`.
fn imports(me: &str, code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let resolve = |path: &str| -> Option<String> {
        // The longest known module that the path starts with.
        let segments: Vec<&str> = path.split("::").collect();
        (1..=segments.len())
            .rev()
            .map(|n| segments[..n].join("::"))
            .find(|m| known.contains(m))
    };
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    for (prefix, base) in [("crate::", String::new()), ("super::", parent(me))] {
        for (i, _) in code.match_indices(prefix) {
            if code[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &code[i + prefix.len()..];
            // `use crate::{a, b::C}`: each item of the group.
            let paths: Vec<String> = if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end]
                    .split(',')
                    .map(|p| p.trim().trim_start_matches('{').to_string())
                    .collect()
            } else {
                vec![rest.chars().take_while(|&c| word(c)).collect()]
            };
            for p in paths {
                let full = match base.is_empty() {
                    true => p.clone(),
                    false => format!("{base}::{p}"),
                };
                if let Some(m) = resolve(full.trim_end_matches(':'))
                    && m != me
                {
                    found.insert(m);
                }
            }
        }
    }
    found
}

fn parent(module: &str) -> String {
    module
        .rsplit_once("::")
        .map_or(String::new(), |(p, _)| p.to_string())
}

fn layer_of(module: &str) -> (usize, &'static str) {
    let top = module.split("::").next().unwrap();
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, members))| members.contains(&top))
        .map(|(i, (name, _))| (i, *name))
        .unwrap_or_else(|| panic!("`{module}` is in no layer: add it to LAYERS"))
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .iter()
        .filter(|(m, _)| m.as_str() != "main")
        .map(|(m, code)| (m.clone(), imports(m, code, &known)))
        .collect()
}

#[test]
fn every_import_points_down_and_the_decisions_import_no_outside_system() {
    let graph = graph();
    assert!(graph.len() > 20, "the source was read: {:?}", graph.keys());
    let mut wrong = Vec::new();
    for (from, targets) in &graph {
        let (level, name) = layer_of(from);
        for to in targets {
            let (to_level, to_name) = layer_of(to);
            if to_level < level {
                wrong.push(format!(
                    "{from} ({name}) -> {to} ({to_name}): back up a layer"
                ));
            }
            if name == DECISIONS && to_name == SYSTEMS {
                wrong.push(format!(
                    "{from} -> {to}: a decision imports an outside system"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_files_import_each_other_in_a_circle() {
    let graph = graph();
    // Depth-first search for a back edge.
    fn visit<'a>(
        m: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, bool>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(m) {
            Some(true) => return None,
            Some(false) => {
                let start = path.iter().position(|p| *p == m).unwrap();
                let mut circle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                circle.push(m.to_string());
                return Some(circle);
            }
            None => {}
        }
        state.insert(m, false);
        path.push(m);
        for next in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, graph, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(m, true);
        None
    }
    let mut state = BTreeMap::new();
    for m in graph.keys() {
        if let Some(circle) = visit(m, &graph, &mut state, &mut Vec::new()) {
            panic!("a circle: {}", circle.join(" -> "));
        }
    }
}

/// The reading itself: a known import is found, a comment is not, and an import that runs back
/// up would be caught.
#[test]
fn the_reader_finds_imports_and_the_check_would_fail() {
    let known: BTreeSet<String> = ["plan", "cluster", "cmd", "cmd::bootstrap", "flux"]
        .map(String::from)
        .into();
    let found = imports(
        "plan",
        "use crate::{flux::Kind, cluster};\nlet x = crate::cmd::bootstrap::run;\n",
        &known,
    );
    assert_eq!(
        found,
        ["cluster", "cmd::bootstrap", "flux"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        imports("cmd::bootstrap", "use super::Global;", &known),
        ["cmd"].map(String::from).into()
    );
    assert!(layer_of("plan").0 > layer_of("cmd::bootstrap").0);
    assert_eq!(layer_of("cluster::lease").1, SYSTEMS);
}
