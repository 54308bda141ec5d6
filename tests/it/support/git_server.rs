//! Git servers on loopback that Flux's source-controller (and the tool under test) clone from:
//!
//! - [`SshGitServer`]: Debian's OpenSSH `sshd` with its own config and ed25519 host key, the `git`
//!   account (made by `tests/env/setup`) with `git-shell` as login shell, and an
//!   `AuthorizedKeysFile` the test controls: what a GitHub deploy key stands for.
//! - [`HttpGitServer`]: `git http-backend` behind nginx + fcgiwrap with HTTP Basic auth whose
//!   password the test sets and changes: what a GitHub token over HTTPS stands for.
//! - [`HttpsGitServer`]: the same over TLS (the test CA), letting through only the GitHub App
//!   installation tokens the fake GitHub issued (nginx `auth_request` to the fake): what
//!   github.com does for `auth: github-app`.
//!
//! Each serves bare repositories seeded by [`GitRepo`] with `./clusters/home` holding a Namespace
//! and a ConfigMap. Processes are started like the cluster's (see `cluster.rs`): killed when the
//! server is dropped or the test binary exits.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use super::cluster::{Process, free_port, run, scratch_dir, tail};

/// A hang guard for a server to start listening (well under a second when idle).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Name of the ConfigMap in every seeded repository's `clusters/home`.
pub const SEED_CONFIG_MAP: &str = "homelab-seed";

/// An SSH git server; see the module docs. URLs look like
/// `ssh://git@127.0.0.1:PORT/tmp/homelab-flux-test-PID/ssh-N/repos/NAME.git`.
pub struct SshGitServer {
    dir: PathBuf,
    port: u16,
    host_keys: Vec<String>,
    authorized_keys: PathBuf,
    keys: Mutex<()>,
    sshd: Process,
}

impl SshGitServer {
    /// Starts sshd on a free 127.0.0.1 port with no authorized key yet, and an ed25519 host key.
    pub fn start() -> SshGitServer {
        Self::with_host_keys(&["ed25519"])
    }

    /// The same with a host key of each `ssh-keygen -t` type given (`ed25519`, `ecdsa`, `rsa`),
    /// all offered by sshd; [`SshGitServer::host_key`] is the first.
    pub fn with_host_keys(types: &[&str]) -> SshGitServer {
        Self::try_start(types)
            .unwrap_or_else(|err| panic!("the SSH git server did not start: {err:#}"))
    }

    fn try_start(types: &[&str]) -> Result<SshGitServer> {
        let sshd_binary = Path::new("/usr/sbin/sshd");
        let git_shell = ["/usr/bin/git-shell", "/usr/lib/git-core/git-shell"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        if !sshd_binary.exists() || git_shell.is_none() {
            bail!("sshd or git-shell is missing: run `tests/env/setup`");
        }
        // The account must exist with git-shell as its shell and `*` as password field.
        let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
        if !passwd.lines().any(|line| line.starts_with("git:")) {
            bail!("there is no `git` user for sshd: run `tests/env/setup`");
        }
        fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;

        let dir = scratch_dir("ssh")?;
        fs::create_dir_all(dir.join("repos"))?;
        let mut host_keys = Vec::new();
        let mut host_key_lines = String::new();
        for kind in types {
            let key = dir.join(format!("ssh_host_{kind}_key"));
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", kind, "-N", "", "-C", "homelab-test-host", "-f"])
                .arg(&key))?;
            let public = fs::read_to_string(key.with_extension("pub"))?;
            host_keys.push(
                public
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" "),
            );
            host_key_lines.push_str(&format!("HostKey {}\n", key.display()));
        }
        if host_keys.is_empty() {
            bail!("no host key type");
        }
        let authorized_keys = dir.join("authorized_keys");
        fs::write(&authorized_keys, "")?;

        let port = free_port();
        let config = dir.join("sshd_config");
        fs::write(
            &config,
            format!(
                "Port {port}
ListenAddress 127.0.0.1
{host_key_lines}PidFile {pid}
AuthorizedKeysFile {authorized_keys}
AllowUsers git
UsePAM no
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowTcpForwarding no
X11Forwarding no
PrintMotd no
LogLevel VERBOSE
# git refuses repositories owned by another user (root made these) unless told otherwise.
SetEnv GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0=*
",
                pid = dir.join("sshd.pid").display(),
                authorized_keys = authorized_keys.display(),
            ),
        )?;
        run(Command::new(sshd_binary).arg("-t").arg("-f").arg(&config))
            .context("sshd rejected its configuration")?;

        let mut command = Command::new(sshd_binary);
        command.args(["-D", "-e", "-f"]).arg(&config);
        let mut sshd = Process::spawn("sshd", command, &dir)?;
        let log = sshd.log_path().to_owned();
        sshd.wait_ready(START_TIMEOUT, "sshd", || {
            fs::read_to_string(&log).is_ok_and(|text| text.contains("Server listening on"))
        })?;
        Ok(SshGitServer {
            dir,
            port,
            host_keys,
            authorized_keys,
            keys: Mutex::new(()),
            sshd,
        })
    }

    /// The server's host key as `ssh-ed25519 AAAA...` (what GitHub's `/meta` lists).
    pub fn host_key(&self) -> &str {
        &self.host_keys[0]
    }

    /// Every host key sshd offers, `TYPE BASE64`, in the order they were asked for.
    pub fn host_keys(&self) -> &[String] {
        &self.host_keys
    }

    /// The `known_hosts` line for this server: `[127.0.0.1]:PORT ssh-ed25519 AAAA...`.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, self.host_key())
    }

    /// The file sshd reads the `git` user's authorized keys from.
    pub fn authorized_keys_path(&self) -> &Path {
        &self.authorized_keys
    }

    /// Authorizes a public key (`ssh-ed25519 AAAA... [comment]`); takes effect for the next
    /// connection.
    pub fn add_authorized_key(&self, public_key: &str) {
        let _guard = self
            .keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut text = fs::read_to_string(&self.authorized_keys).unwrap_or_default();
        text.push_str(public_key.trim());
        text.push('\n');
        fs::write(&self.authorized_keys, text).expect("writing authorized_keys");
    }

    /// Creates and seeds a bare repository `NAME.git` (see [`GitRepo`]).
    pub fn create_repo(&self, name: &str) -> GitRepo {
        GitRepo::create(&self.dir, name, name)
    }

    /// A bare repository `NAME.git` without any commit (it advertises no ref); its path.
    pub fn create_empty_repo(&self, name: &str) -> PathBuf {
        let path = self.dir.join("repos").join(format!("{name}.git"));
        run(git(&self.dir)
            .args(["init", "-q", "--bare", "-b", "main"])
            .arg(&path))
        .unwrap_or_else(|err| panic!("creating the empty repository `{name}`: {err:#}"));
        path
    }

    /// `ssh://git@127.0.0.1:PORT/ABSOLUTE/PATH/NAME.git` (git-shell takes the path as absolute).
    pub fn url(&self, repo: &GitRepo) -> String {
        format!("{}{}", self.url_prefix(), repo.path().display())
    }

    /// `ssh://git@127.0.0.1:PORT`: a URL without its absolute path.
    pub fn url_prefix(&self) -> String {
        format!("ssh://git@127.0.0.1:{}", self.port)
    }

    /// Last lines of sshd's log (authentication failures show here).
    pub fn log_tail(&self, lines: usize) -> String {
        tail(self.sshd.log_path(), lines)
    }
}

/// An HTTP git server with Basic auth; see the module docs. URLs look like
/// `http://127.0.0.1:PORT/NAME.git`.
pub struct HttpGitServer {
    username: String,
    htpasswd: PathBuf,
    served: Nginx,
}

impl HttpGitServer {
    /// Starts nginx + fcgiwrap on a free 127.0.0.1 port accepting `username:password`.
    pub fn start(username: &str, password: &str) -> HttpGitServer {
        Self::try_start(username, password)
            .unwrap_or_else(|err| panic!("the HTTP git server did not start: {err:#}"))
    }

    fn try_start(username: &str, password: &str) -> Result<HttpGitServer> {
        let dir = scratch_dir("http")?;
        let htpasswd = dir.join("htpasswd");
        fs::write(&htpasswd, htpasswd_line(username, password))?;
        let auth = format!(
            "auth_basic \"git\";\n            auth_basic_user_file {};",
            htpasswd.display()
        );
        let served = Nginx::start(dir, "", &auth, "")?;
        Ok(HttpGitServer {
            username: username.to_owned(),
            htpasswd,
            served,
        })
    }

    /// Replaces the accepted password (nginx reads the file on every request).
    pub fn set_password(&self, password: &str) {
        fs::write(&self.htpasswd, htpasswd_line(&self.username, password))
            .expect("writing htpasswd");
    }

    /// Creates and seeds a bare repository `NAME.git` (see [`GitRepo`]).
    pub fn create_repo(&self, name: &str) -> GitRepo {
        GitRepo::create(&self.served.dir, name, name)
    }

    /// `http://127.0.0.1:PORT/NAME.git`.
    pub fn url(&self, repo: &GitRepo) -> String {
        format!("http://127.0.0.1:{}/{}.git", self.served.port, repo.name())
    }
}

/// An HTTPS git server in front of which the fake GitHub decides, as github.com does for a clone
/// with an installation token: HTTP Basic user `x-access-token`, password an installation token
/// the fake issued, unexpired and scoped to the repository (with `contents` read); anything else
/// is 401. nginx asks the fake with `auth_request` on every request (see
/// [`super::fake_github::GIT_AUTH_PATH`]), so a token that expires or a revoked installation
/// stops working at once. TLS with the test CA ([`super::tls::test_ca`]), which the Flux
/// controllers trust. URLs look like `https://127.0.0.1:PORT/OWNER/NAME.git`.
pub struct HttpsGitServer {
    served: Nginx,
}

impl HttpsGitServer {
    /// Starts nginx + fcgiwrap on a free 127.0.0.1 port, asking `gh` about every request.
    pub fn start_for_app(gh: &super::fake_github::FakeGitHub) -> HttpsGitServer {
        Self::try_start(gh)
            .unwrap_or_else(|err| panic!("the HTTPS git server did not start: {err:#}"))
    }

    fn try_start(gh: &super::fake_github::FakeGitHub) -> Result<HttpsGitServer> {
        let ca = super::tls::test_ca();
        let tls = format!(
            " ssl;\n        ssl_certificate {};\n        ssl_certificate_key {};",
            ca.cert_path().display(),
            ca.key_path().display()
        );
        // The subrequest carries the client's Authorization header (nginx passes request
        // headers on) and the original URI; its body is dropped.
        let check = format!(
            "location = /_installation-token {{
            internal;
            proxy_pass {gh}{path};
            proxy_pass_request_body off;
            proxy_set_header Content-Length \"\";
            proxy_set_header X-Original-URI $request_uri;
        }}
",
            gh = gh.url(),
            path = super::fake_github::GIT_AUTH_PATH,
        );
        let served = Nginx::start(
            scratch_dir("https")?,
            &tls,
            "auth_request /_installation-token;",
            &check,
        )?;
        Ok(HttpsGitServer { served })
    }

    /// Creates and seeds a bare repository `OWNER/NAME.git` (see [`GitRepo`]; its manifests use
    /// the namespace `NAME`).
    pub fn create_repo(&self, owner: &str, name: &str) -> GitRepo {
        GitRepo::create(&self.served.dir, &format!("{owner}/{name}"), name)
    }

    /// Serves an existing bare repository of another server (the SSH one) at the same path,
    /// `https://127.0.0.1:PORT/ABSOLUTE/PATH/NAME.git`: one repository on both servers, with
    /// the same commits, whose `ssh://` and `https://` URLs differ only in scheme, user and port
    /// (as github.com's do). Register the URL as the fake's `clone_url` of the repository: the
    /// fake scopes tokens by it. Returns the URL.
    pub fn serve_repo(&self, repo: &GitRepo) -> String {
        let relative = repo.path().strip_prefix("/").expect("an absolute path");
        let link = self.served.dir.join("repos").join(relative);
        fs::create_dir_all(link.parent().expect("a parent")).expect("creating the folders");
        std::os::unix::fs::symlink(repo.path(), &link).expect("linking the repository");
        format!(
            "https://127.0.0.1:{}{}",
            self.served.port,
            repo.path().display()
        )
    }

    /// `https://127.0.0.1:PORT/OWNER/NAME.git`.
    pub fn url(&self, repo: &GitRepo) -> String {
        format!("https://127.0.0.1:{}/{}.git", self.served.port, repo.rel)
    }

    /// nginx's access log (combined format: the Basic user, the request line, the status);
    /// passwords are not in it.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.served.dir.join("nginx-access.log")).unwrap_or_default()
    }
}

/// nginx + fcgiwrap + `git http-backend` serving `<dir>/repos` (killed when dropped).
struct Nginx {
    dir: PathBuf,
    port: u16,
    /// Held, not read: dropping them kills nginx and fcgiwrap.
    _nginx: Process,
    _fcgiwrap: Process,
}

impl Nginx {
    /// `listen` is appended to the `listen` directive, `auth` goes into `location /`, `extra`
    /// into the `server` block.
    fn start(dir: PathBuf, listen: &str, auth: &str, extra: &str) -> Result<Nginx> {
        let nginx_binary = Path::new("/usr/sbin/nginx");
        let fcgiwrap_binary = Path::new("/usr/sbin/fcgiwrap");
        let backend = Path::new("/usr/lib/git-core/git-http-backend");
        for binary in [nginx_binary, fcgiwrap_binary, backend] {
            if !binary.exists() {
                bail!("`{}` is missing: run `tests/env/setup`", binary.display());
            }
        }
        let repos = dir.join("repos");
        fs::create_dir_all(&repos)?;
        fs::create_dir_all(dir.join("nginx-temp"))?;
        let socket = dir.join("fcgiwrap.sock");

        let mut command = Command::new(fcgiwrap_binary);
        // One process: preforked workers (`-c N`) would outlive a killed parent.
        command
            .args(["-c", "1", "-s"])
            .arg(format!("unix:{}", socket.display()));
        let mut fcgiwrap = Process::spawn("fcgiwrap", command, &dir)?;
        fcgiwrap.wait_ready(START_TIMEOUT, "fcgiwrap socket", || socket.exists())?;

        let port = free_port();
        let temp = dir.join("nginx-temp");
        let config = dir.join("nginx.conf");
        fs::write(
            &config,
            format!(
                "daemon off;
master_process off;
worker_processes 1;
pid {pid};
error_log {dir}/nginx-error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/nginx-access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{port}{listen}
        {extra}
        location / {{
            {auth}
            fastcgi_pass unix:{socket};
            fastcgi_param SCRIPT_FILENAME {backend};
            fastcgi_param GIT_PROJECT_ROOT {repos};
            fastcgi_param GIT_HTTP_EXPORT_ALL 1;
            fastcgi_param PATH_INFO $uri;
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
            fastcgi_param REMOTE_USER $remote_user;
            fastcgi_param REMOTE_ADDR $remote_addr;
            fastcgi_param SERVER_PROTOCOL $server_protocol;
            fastcgi_param HTTP_GIT_PROTOCOL $http_git_protocol;
            fastcgi_param GIT_CONFIG_COUNT 1;
            fastcgi_param GIT_CONFIG_KEY_0 safe.directory;
            fastcgi_param GIT_CONFIG_VALUE_0 *;
        }}
    }}
}}
",
                pid = dir.join("nginx.pid").display(),
                dir = dir.display(),
                temp = temp.display(),
                listen = if listen.is_empty() { ";" } else { listen },
                socket = socket.display(),
                backend = backend.display(),
                repos = repos.display(),
            ),
        )?;
        let mut command = Command::new(nginx_binary);
        command
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("nginx-error.log"))
            .arg("-c")
            .arg(&config);
        let mut nginx = Process::spawn("nginx", command, &dir)?;
        let error_log = dir.join("nginx-error.log");
        nginx
            .wait_ready(START_TIMEOUT, "nginx", || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            })
            .map_err(|err| err.context(format!("nginx-error.log:\n{}", tail(&error_log, 20))))?;
        Ok(Nginx {
            dir,
            port,
            _nginx: nginx,
            _fcgiwrap: fcgiwrap,
        })
    }
}

/// A bare repository `<server dir>/repos/NAME.git` on branch `main`, seeded with one commit whose
/// `clusters/home` holds `namespace.yaml` (Namespace `NAME`) and `configmap.yaml` (ConfigMap
/// [`SEED_CONFIG_MAP`] in that namespace, data `revision: "1"` and `repo: NAME`).
pub struct GitRepo {
    name: String,
    /// The path under `repos/` without `.git`: `NAME` or `OWNER/NAME`.
    rel: String,
    path: PathBuf,
    worktree: PathBuf,
    seeded_commit: String,
    lock: Mutex<()>,
}

impl GitRepo {
    fn create(server_dir: &Path, rel: &str, name: &str) -> GitRepo {
        Self::try_create(server_dir, rel, name)
            .unwrap_or_else(|err| panic!("creating git repository `{rel}` failed: {err:#}"))
    }

    fn try_create(server_dir: &Path, rel: &str, name: &str) -> Result<GitRepo> {
        let path = server_dir.join("repos").join(format!("{rel}.git"));
        let worktree = server_dir.join("work").join(rel);
        fs::create_dir_all(&worktree)?;
        run(git(&worktree)
            .args(["init", "-q", "--bare", "-b", "main"])
            .arg(&path))?;
        run(git(&worktree).args(["init", "-q", "-b", "main"]))?;
        let mut repo = GitRepo {
            name: name.to_owned(),
            rel: rel.to_owned(),
            path,
            worktree,
            seeded_commit: String::new(),
            lock: Mutex::new(()),
        };
        let files = [
            (
                "clusters/home/namespace.yaml",
                format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"),
            ),
            ("clusters/home/configmap.yaml", config_map(name, "1")),
        ];
        let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
        repo.seeded_commit = repo.try_commit(&files, "seed clusters/home")?;
        Ok(repo)
    }

    /// Repository name (without `.git`); also the namespace of the seeded manifests.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Absolute path of the bare repository.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SHA-1 of the seeded commit.
    pub fn seeded_commit(&self) -> &str {
        &self.seeded_commit
    }

    /// Writes the files (path relative to the repository root, content), commits them and
    /// pushes to `main`; returns the new commit's SHA-1.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        self.try_commit(files, message)
            .unwrap_or_else(|err| panic!("committing to `{}` failed: {err:#}", self.name))
    }

    /// Commits a new `clusters/home/configmap.yaml` whose `revision` is `revision`.
    pub fn commit_config_map_revision(&self, revision: &str) -> String {
        let content = config_map(&self.name, revision);
        self.commit(
            &[("clusters/home/configmap.yaml", &content)],
            &format!("revision {revision}"),
        )
    }

    fn try_commit(&self, files: &[(&str, &str)], message: &str) -> Result<String> {
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (path, content) in files {
            let file = self.worktree.join(path);
            if let Some(parent) = file.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(&file, content)?;
        }
        run(git(&self.worktree).args(["add", "-A"]))?;
        run(git(&self.worktree).args(["commit", "-q", "-m", message]))?;
        run(git(&self.worktree)
            .arg("push")
            .arg("-q")
            .arg(&self.path)
            .arg("main:main"))?;
        let sha = run(git(&self.worktree).args(["rev-parse", "HEAD"]))?;
        Ok(sha.trim().to_owned())
    }
}

/// nginx's `auth_basic_user_file` takes `{PLAIN}` passwords, so tokens need no hashing.
fn htpasswd_line(username: &str, password: &str) -> String {
    format!("{username}:{{PLAIN}}{password}\n")
}

fn config_map(namespace: &str, revision: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {SEED_CONFIG_MAP}\n  namespace: {namespace}\n\
         data:\n  repo: {namespace}\n  revision: \"{revision}\"\n"
    )
}

/// `git` in `dir`, isolated from the machine's and user's git config.
fn git(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "homelab test")
        .env("GIT_AUTHOR_EMAIL", "test@homelab.invalid")
        .env("GIT_COMMITTER_NAME", "homelab test")
        .env("GIT_COMMITTER_EMAIL", "test@homelab.invalid");
    command
}

/// An ed25519 key pair made by `ssh-keygen`.
pub struct SshKeyPair {
    /// OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----...`), as Flux's `identity`.
    pub private_key: String,
    /// `ssh-ed25519 AAAA... comment`, as Flux's `identity.pub` and an authorized key.
    pub public_key: String,
}

/// Makes a new ed25519 key pair without passphrase.
pub fn generate_ssh_key(comment: &str) -> SshKeyPair {
    let dir = scratch_dir("key").expect("a folder for the key");
    let path = dir.join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(&path))
    .expect("ssh-keygen");
    let pair = SshKeyPair {
        private_key: fs::read_to_string(&path).expect("reading the private key"),
        public_key: fs::read_to_string(path.with_extension("pub"))
            .expect("reading the public key")
            .trim()
            .to_owned(),
    };
    let _ = fs::remove_dir_all(dir);
    pair
}
