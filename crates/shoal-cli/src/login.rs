//! `shoal login` / `shoal logout`: registry credentials kept the way the docker CLI keeps them,
//! and the lookup `--with-registry-auth` uses.
//!
//! ```text
//!   $DOCKER_CONFIG/config.json (default ~/.docker/config.json)
//!     "auths":       { "<server>": { "auth": base64("user:pass") } }   file store
//!     "credsStore":  "<name>"                     every server through docker-credential-<name>
//!     "credHelpers": { "<host>": "<name>" }       one server through docker-credential-<name>
//! ```
//!
//! Every other key of the file is kept as it was. A credential helper is run as
//! `docker-credential-<name> store|get|erase` with the JSON protocol of docker's credential
//! helpers (`{"ServerURL","Username","Secret"}`; `get`/`erase` read the server URL on stdin).
//!
//! What differs from `docker login`: docker sends the credentials to the daemon's `/auth`
//! endpoint, which logs in to the registry and may hand back an identity token. Shoal has no
//! registry client and no registry is reachable from a swarm built for tests, so `shoal login`
//! cannot verify the credentials: it checks what it can (a well-formed server address, a user
//! name and a password) and that the stored credentials read back identically, then prints
//! `Login Succeeded`. Wrong credentials show up only when a runtime pulls with them.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::client::CliError;
use crate::format::{err, out};
use crate::opts;

/// Docker Hub's server address, the default of `login` and `logout`.
pub const DEFAULT_SERVER: &str = "https://index.docker.io/v1/";

/// What a credential helper answers when it has nothing for a server.
const HELPER_NOT_FOUND: &str = "credentials not found in native keychain";

/// `login` flags.
#[derive(Args, Debug, Clone)]
pub struct LoginArgs {
    /// Username
    #[arg(short = 'u', long = "username", value_name = "string")]
    pub username: Option<String>,
    /// Password or Personal Access Token (PAT)
    #[arg(short = 'p', long = "password", value_name = "string")]
    pub password: Option<String>,
    /// Take the Password or Personal Access Token (PAT) from stdin
    #[arg(long = "password-stdin")]
    pub password_stdin: bool,
    /// Registry server (default: Docker Hub)
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
}

/// `logout` arguments.
#[derive(Args, Debug, Clone)]
pub struct LogoutArgs {
    /// Registry server (default: Docker Hub)
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
}

/// One server's credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthEntry {
    pub username: String,
    pub password: String,
    /// An identity token (a helper's `<token>` user name), instead of a password.
    pub identity_token: String,
}

/// The message of the docker CLI's credential helper protocol.
#[derive(Serialize, Deserialize, Debug, Default)]
struct HelperCreds {
    #[serde(rename = "ServerURL", default)]
    server_url: String,
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// `$DOCKER_CONFIG/config.json`, or `~/.docker/config.json`.
pub fn config_path() -> PathBuf {
    match std::env::var("DOCKER_CONFIG") {
        Ok(dir) if !dir.is_empty() => PathBuf::from(dir).join("config.json"),
        _ => std::env::var("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(".docker")
            .join("config.json"),
    }
}

/// The docker config file as a JSON object; an absent or empty file is an empty object.
pub fn load_config(path: &Path) -> Result<Map<String, Value>, CliError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => {
            return Err(CliError::msg(format!(
                "loading config file: {}: {e}",
                path.display()
            )))
        }
    };
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(CliError::msg(format!(
            "loading config file: {}: not a JSON object",
            path.display()
        ))),
        Err(e) => Err(CliError::msg(format!(
            "loading config file: {}: {e}",
            path.display()
        ))),
    }
}

/// Writes the config file (tab-indented as docker writes it, mode 0600) through a temporary
/// file renamed over the old one.
pub fn save_config(path: &Path, config: &Map<String, Value>) -> Result<(), CliError> {
    let fail = |e: std::io::Error| {
        CliError::msg(format!("error saving config file {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    config
        .serialize(&mut ser)
        .map_err(|e| CliError::msg(format!("error saving config file: {e}")))?;
    let tmp = path.with_extension("json.tmp");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(fail)?;
        f.write_all(&buf).map_err(fail)?;
        f.sync_all().map_err(fail)?;
    }
    std::fs::rename(&tmp, path).map_err(fail)
}

/// The host part of a server address (`https://reg:5000/v2/` -> `reg:5000`), as docker's
/// `ConvertToHostname`.
pub fn hostname_of(server: &str) -> String {
    let s = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    s.split('/').next().unwrap_or(s).to_string()
}

/// The key a server's credentials are stored under: Docker Hub's full address, else the host.
pub fn server_key(server: Option<&str>) -> String {
    match server.map(str::trim).filter(|s| !s.is_empty()) {
        None => DEFAULT_SERVER.to_string(),
        Some(s) => {
            let host = hostname_of(s);
            if matches!(
                host.as_str(),
                "docker.io" | "index.docker.io" | "registry-1.docker.io"
            ) {
                DEFAULT_SERVER.to_string()
            } else {
                host
            }
        }
    }
}

/// The credential helper for a server, if the config names one (`credHelpers` first).
pub fn helper_for(config: &Map<String, Value>, server: &str) -> Option<String> {
    let host = hostname_of(server);
    let by_host = config
        .get("credHelpers")
        .and_then(Value::as_object)
        .and_then(|m| m.get(&host).or_else(|| m.get(server)))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    by_host
        .or_else(|| {
            config
                .get("credsStore")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .map(str::to_string)
}

/// The program of a credential helper named `name`, found in `PATH`.
pub fn helper_program(name: &str) -> PathBuf {
    PathBuf::from(format!("docker-credential-{name}"))
}

fn run_helper(program: &Path, action: &str, input: &[u8]) -> Result<(bool, String), CliError> {
    let mut child = Command::new(program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            CliError::msg(format!(
                "error getting credentials - err: exec: \"{}\": {e}",
                program.display()
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| CliError::msg(format!("credential helper {action}: {e}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| CliError::msg(format!("credential helper {action}: {e}")))?;
    let mut text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() && text.is_empty() {
        text = String::from_utf8_lossy(&output.stderr).trim().to_string();
    }
    Ok((output.status.success(), text))
}

/// `docker-credential-<name> store`.
pub fn helper_store(program: &Path, server: &str, entry: &AuthEntry) -> Result<(), CliError> {
    let (username, secret) = if entry.identity_token.is_empty() {
        (entry.username.clone(), entry.password.clone())
    } else {
        ("<token>".to_string(), entry.identity_token.clone())
    };
    let msg = HelperCreds {
        server_url: server.to_string(),
        username,
        secret,
    };
    let body = serde_json::to_vec(&msg).map_err(|e| CliError::msg(e.to_string()))?;
    match run_helper(program, "store", &body)? {
        (true, _) => Ok(()),
        (false, text) => Err(CliError::msg(format!(
            "error storing credentials - err: exit status 1, out: `{text}`"
        ))),
    }
}

/// `docker-credential-<name> get`: `None` when the helper has nothing for the server.
pub fn helper_get(program: &Path, server: &str) -> Result<Option<AuthEntry>, CliError> {
    let (ok, text) = run_helper(program, "get", server.as_bytes())?;
    if !ok {
        if text.contains(HELPER_NOT_FOUND) {
            return Ok(None);
        }
        return Err(CliError::msg(format!(
            "error getting credentials - err: exit status 1, out: `{text}`"
        )));
    }
    let c: HelperCreds = serde_json::from_str(&text).map_err(|e| {
        CliError::msg(format!(
            "error getting credentials - err: invalid helper answer: {e}"
        ))
    })?;
    if c.username.is_empty() && c.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if c.username == "<token>" {
        AuthEntry {
            identity_token: c.secret,
            ..Default::default()
        }
    } else {
        AuthEntry {
            username: c.username,
            password: c.secret,
            identity_token: String::new(),
        }
    }))
}

/// `docker-credential-<name> erase`; erasing what is not there is not an error.
pub fn helper_erase(program: &Path, server: &str) -> Result<(), CliError> {
    match run_helper(program, "erase", server.as_bytes())? {
        (true, _) => Ok(()),
        (false, text) if text.contains(HELPER_NOT_FOUND) => Ok(()),
        (false, text) => Err(CliError::msg(format!(
            "error erasing credentials - err: exit status 1, out: `{text}`"
        ))),
    }
}

fn auths_mut(config: &mut Map<String, Value>) -> &mut Map<String, Value> {
    let slot = config
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

/// Finds the `auths` key holding a server's credentials (exact key, else same host).
fn find_auth_key(config: &Map<String, Value>, server: &str) -> Option<String> {
    let auths = config.get("auths")?.as_object()?;
    if auths.contains_key(server) {
        return Some(server.to_string());
    }
    let host = hostname_of(server);
    auths
        .keys()
        .find(|k| server_key(Some(k)) == server_key(Some(&host)))
        .cloned()
}

/// Reads a server's entry of the file store.
pub fn file_get(config: &Map<String, Value>, server: &str) -> Option<AuthEntry> {
    let key = find_auth_key(config, server)?;
    let v = config.get("auths")?.get(&key)?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut e = AuthEntry {
        username: s("username"),
        password: s("password"),
        identity_token: s("identitytoken"),
    };
    let auth = s("auth");
    if !auth.is_empty() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (u, p) = text.split_once(':')?;
        e.username = u.to_string();
        e.password = p.trim_end_matches('\0').to_string();
    }
    if e == AuthEntry::default() {
        return None;
    }
    Some(e)
}

/// Writes a server's entry to the file store (`auth` = base64 of `user:pass`).
pub fn file_store(config: &mut Map<String, Value>, server: &str, entry: &AuthEntry) {
    let mut v = Map::new();
    if !entry.username.is_empty() || !entry.password.is_empty() {
        let raw = format!("{}:{}", entry.username, entry.password);
        v.insert(
            "auth".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(raw)),
        );
    }
    if !entry.identity_token.is_empty() {
        v.insert(
            "identitytoken".into(),
            Value::String(entry.identity_token.clone()),
        );
    }
    auths_mut(config).insert(server.to_string(), Value::Object(v));
}

/// Credentials for a server: through its helper when one is configured, else the file store.
pub fn get_credentials(
    config: &Map<String, Value>,
    server: &str,
) -> Result<Option<AuthEntry>, CliError> {
    get_credentials_with(config, server, &helper_program)
}

/// [`get_credentials`], with the program of a named helper given by `program`.
pub fn get_credentials_with(
    config: &Map<String, Value>,
    server: &str,
    program: &dyn Fn(&str) -> PathBuf,
) -> Result<Option<AuthEntry>, CliError> {
    match helper_for(config, server) {
        Some(name) => helper_get(&program(&name), server),
        None => Ok(file_get(config, server)),
    }
}

/// Stores a server's credentials: through its helper (the file keeps an empty entry, as
/// docker's), else in `auths`.
pub fn store_credentials(
    config: &mut Map<String, Value>,
    server: &str,
    entry: &AuthEntry,
) -> Result<(), CliError> {
    match helper_for(config, server) {
        Some(name) => {
            helper_store(&helper_program(&name), server, entry)?;
            auths_mut(config).insert(server.to_string(), Value::Object(Map::new()));
            Ok(())
        }
        None => {
            file_store(config, server, entry);
            Ok(())
        }
    }
}

/// The credentials `--with-registry-auth` sends for an image (docker's rules: no registry host
/// in the name means Docker Hub). `None` when nothing is stored for its registry.
pub fn credentials_for_image(image: &str) -> Option<DockerCredentials> {
    let config = load_config(&config_path()).ok()?;
    credentials_for_image_in(&config, image, &helper_program)
}

/// [`credentials_for_image`] from a loaded config, helpers found through `program`.
pub fn credentials_for_image_in(
    config: &Map<String, Value>,
    image: &str,
    program: &dyn Fn(&str) -> PathBuf,
) -> Option<DockerCredentials> {
    let registry = opts::registry_of(image);
    let server = if registry == "docker.io" {
        DEFAULT_SERVER.to_string()
    } else {
        registry
    };
    let entry = match get_credentials_with(config, &server, program) {
        Ok(e) => e?,
        Err(e) => {
            err(&format!("{e}\n"));
            return None;
        }
    };
    Some(DockerCredentials {
        username: Some(entry.username).filter(|s| !s.is_empty()),
        password: Some(entry.password).filter(|s| !s.is_empty()),
        identitytoken: Some(entry.identity_token).filter(|s| !s.is_empty()),
        serveraddress: Some(server),
        ..Default::default()
    })
}

fn read_line_stdin() -> Result<String, CliError> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::msg(e.to_string()))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn read_hidden() -> Result<String, CliError> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let original = tcgetattr(&stdin).map_err(|e| CliError::msg(e.to_string()))?;
    let mut quiet = original.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).map_err(|e| CliError::msg(e.to_string()))?;
    let line = read_line_stdin();
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &original);
    out("\n");
    line
}

/// Checks the flags and gathers user name and password as `docker login` does.
fn gather(a: &LoginArgs, stored: Option<&AuthEntry>) -> Result<AuthEntry, CliError> {
    if a.password.is_some() && a.password_stdin {
        return Err(CliError::msg(
            "--password and --password-stdin are mutually exclusive",
        ));
    }
    let mut password = a.password.clone().unwrap_or_default();
    if a.password_stdin {
        if a.username.as_deref().unwrap_or("").is_empty() {
            return Err(CliError::msg(
                "Must provide --username with --password-stdin",
            ));
        }
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .map_err(|e| CliError::msg(e.to_string()))?;
        password = buf.trim_end_matches(['\r', '\n']).to_string();
    } else if a.password.is_some() {
        err("WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n");
    }
    let mut username = a.username.clone().unwrap_or_default().trim().to_string();
    let interactive = std::io::stdin().is_terminal();
    if username.is_empty() {
        if !interactive {
            return Err(CliError::msg(
                "Error: Cannot perform an interactive login from a non TTY device",
            ));
        }
        let hint = stored.map(|s| s.username.as_str()).unwrap_or("");
        if hint.is_empty() {
            out("Username: ");
        } else {
            out(&format!("Username ({hint}): "));
        }
        username = read_line_stdin()?.trim().to_string();
        if username.is_empty() {
            username = hint.to_string();
        }
    }
    if username.is_empty() {
        return Err(CliError::msg("Error: Non-null Username Required"));
    }
    if password.is_empty() {
        if !interactive {
            return Err(CliError::msg(
                "Error: Cannot perform an interactive login from a non TTY device",
            ));
        }
        out("Password: ");
        password = read_hidden()?;
    }
    if password.is_empty() {
        return Err(CliError::msg("Error: Password Required"));
    }
    Ok(AuthEntry {
        username,
        password,
        identity_token: String::new(),
    })
}

/// A server address docker would accept: a host (optionally `:port`) with an optional scheme
/// and path.
fn check_server(server: &str) -> Result<(), CliError> {
    let host = hostname_of(server);
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host.as_str(), None),
    };
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok());
    if name_ok && port_ok {
        Ok(())
    } else {
        Err(CliError::msg(format!("invalid registry address: {server}")))
    }
}

/// `shoal login [SERVER]`.
pub fn login(a: &LoginArgs) -> Result<(), CliError> {
    let server = server_key(a.server.as_deref());
    check_server(&server)?;
    let path = config_path();
    let mut config = load_config(&path)?;
    let given = a.username.is_some() || a.password.is_some() || a.password_stdin;
    let stored = get_credentials(&config, &server).unwrap_or(None);
    if !given {
        if let Some(s) = stored.as_ref().filter(|s| !s.username.is_empty()) {
            out(&format!(
                "Authenticating with existing credentials... [Username: {}]\n",
                s.username
            ));
            out("Login Succeeded\n");
            return Ok(());
        }
    }
    let entry = gather(a, stored.as_ref())?;
    store_credentials(&mut config, &server, &entry)?;
    save_config(&path, &config)?;
    // The best-effort check: what a later pull would use reads back as given.
    let reread = load_config(&path)?;
    if get_credentials(&reread, &server)?.as_ref() != Some(&entry) {
        return Err(CliError::msg(format!(
            "Error saving credentials: credentials for {server} did not read back from {}",
            path.display()
        )));
    }
    if helper_for(&config, &server).is_none() {
        err(&format!(
            "WARNING! Your credentials are stored unencrypted in '{}'.\n\
             Configure a credential helper to remove this warning. See\n\
             https://docs.docker.com/go/credential-store/\n\n",
            path.display()
        ));
    }
    out("Login Succeeded\n");
    Ok(())
}

/// `shoal logout [SERVER]`.
pub fn logout(a: &LogoutArgs) -> Result<(), CliError> {
    let server = server_key(a.server.as_deref());
    let host = if server == DEFAULT_SERVER {
        server.clone()
    } else {
        hostname_of(&server)
    };
    let path = config_path();
    let mut config = load_config(&path)?;
    // The spellings a server may have been stored under.
    let mut keys = vec![server.clone()];
    if server != DEFAULT_SERVER {
        if let Some(raw) = a.server.as_deref() {
            keys.push(raw.to_string());
        }
        keys.push(format!("http://{host}"));
        keys.push(format!("https://{host}"));
    }
    keys.dedup();
    let in_file: Vec<String> = {
        let auths = config.get("auths").and_then(Value::as_object);
        keys.iter()
            .filter(|k| auths.is_some_and(|m| m.contains_key(k.as_str())))
            .cloned()
            .collect()
    };
    let helper = helper_for(&config, &server);
    let in_helper = match &helper {
        Some(name) => helper_get(&helper_program(name), &server)
            .unwrap_or(None)
            .is_some(),
        None => false,
    };
    if in_file.is_empty() && !in_helper {
        out(&format!("Not logged in to {host}\n"));
        return Ok(());
    }
    out(&format!("Removing login credentials for {host}\n"));
    let mut errors: HashMap<String, String> = HashMap::new();
    if let Some(name) = &helper {
        for k in &keys {
            if let Err(e) = helper_erase(&helper_program(name), k) {
                errors.insert(k.clone(), e.to_string());
            }
        }
    }
    let auths = auths_mut(&mut config);
    for k in &in_file {
        auths.remove(k);
    }
    save_config(&path, &config)?;
    let mut failed: Vec<_> = errors.into_iter().collect();
    failed.sort();
    for (k, e) in failed {
        err(&format!("WARNING: could not erase credentials: {k}: {e}\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn config_round_trip_keeps_other_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        let original = json!({
            "auths": {"other.example.com": {"auth": "b3RoZXI6cHc="}},
            "psFormat": "table {{.ID}}",
            "proxies": {"default": {"httpProxy": "http://proxy:3128"}},
            "currentContext": "remote"
        });
        std::fs::write(&path, original.to_string()).expect("write");
        let mut config = load_config(&path).expect("load");
        let entry = AuthEntry {
            username: "alice".into(),
            password: "s3:cr=t".into(),
            identity_token: String::new(),
        };
        store_credentials(&mut config, DEFAULT_SERVER, &entry).expect("store");
        save_config(&path, &config).expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("\n\t\"auths\""), "tab-indented: {text}");
        let back: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(back["psFormat"], original["psFormat"]);
        assert_eq!(back["proxies"], original["proxies"]);
        assert_eq!(back["currentContext"], "remote");
        assert_eq!(back["auths"]["other.example.com"]["auth"], "b3RoZXI6cHc=");
        assert_eq!(
            back["auths"][DEFAULT_SERVER]["auth"],
            base64::engine::general_purpose::STANDARD.encode("alice:s3:cr=t")
        );
        let reread = load_config(&path).expect("load");
        assert_eq!(file_get(&reread, DEFAULT_SERVER), Some(entry));
        assert_eq!(
            file_get(&reread, "https://other.example.com/v2/").map(|e| e.username),
            Some("other".to_string())
        );
        assert_eq!(file_get(&reread, "nothing.example.com"), None);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn missing_or_empty_config_is_empty_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        assert!(load_config(&path).expect("absent").is_empty());
        std::fs::write(&path, "").expect("write");
        assert!(load_config(&path).expect("empty").is_empty());
        std::fs::write(&path, "{not json").expect("write");
        assert!(load_config(&path).is_err());
    }

    #[test]
    fn server_keys_follow_docker() {
        assert_eq!(server_key(None), DEFAULT_SERVER);
        assert_eq!(server_key(Some("docker.io")), DEFAULT_SERVER);
        assert_eq!(
            server_key(Some("https://index.docker.io/v1/")),
            DEFAULT_SERVER
        );
        assert_eq!(
            server_key(Some("https://reg.example.com:5000/v2/")),
            "reg.example.com:5000"
        );
        assert_eq!(server_key(Some("localhost:5000")), "localhost:5000");
        assert!(check_server("reg.example.com:5000").is_ok());
        assert!(check_server("reg example").is_err());
        assert!(check_server("reg:port").is_err());
    }

    #[test]
    fn helpers_are_chosen_per_host_then_store() {
        let c = obj(json!({
            "credsStore": "desktop",
            "credHelpers": {"gcr.io": "gcloud"}
        }));
        assert_eq!(helper_for(&c, "gcr.io").as_deref(), Some("gcloud"));
        assert_eq!(helper_for(&c, DEFAULT_SERVER).as_deref(), Some("desktop"));
        let c = obj(json!({"auths": {}}));
        assert_eq!(helper_for(&c, DEFAULT_SERVER), None);
    }

    /// A fake `docker-credential-*` keeping its entries as files in a directory, speaking the
    /// helper protocol (JSON on stdin for store, the server URL for get/erase).
    fn fake_helper(dir: &Path) -> PathBuf {
        let program = dir.join("docker-credential-fake");
        let db = dir.join("db");
        std::fs::create_dir_all(&db).expect("db");
        let script = format!(
            r#"#!/bin/sh
db='{db}'
input=$(cat)
case "$1" in
  store)
    url=$(printf '%s' "$input" | sed -n 's/.*"ServerURL":"\([^"]*\)".*/\1/p')
    key=$(printf '%s' "$url" | od -An -tx1 | tr -d ' \n')
    printf '%s' "$input" > "$db/$key" ;;
  get)
    key=$(printf '%s' "$input" | od -An -tx1 | tr -d ' \n')
    if [ -f "$db/$key" ]; then cat "$db/$key"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  erase)
    key=$(printf '%s' "$input" | od -An -tx1 | tr -d ' \n')
    if [ -f "$db/$key" ]; then rm "$db/$key"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  *) echo "unknown action"; exit 1 ;;
esac
"#,
            db = db.display()
        );
        std::fs::write(&program, script).expect("script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        program
    }

    #[test]
    fn credential_helper_protocol_store_get_erase() {
        let dir = tempfile::tempdir().expect("tempdir");
        let helper = fake_helper(dir.path());
        let server = "reg.example.com:5000";
        assert_eq!(helper_get(&helper, server).expect("get"), None);
        let entry = AuthEntry {
            username: "bob".into(),
            password: "pw with \"quotes\"".into(),
            identity_token: String::new(),
        };
        helper_store(&helper, server, &entry).expect("store");
        let stored = std::fs::read_dir(dir.path().join("db"))
            .expect("db")
            .filter_map(Result::ok)
            .map(|e| std::fs::read_to_string(e.path()).expect("entry"))
            .collect::<Vec<_>>();
        assert_eq!(stored.len(), 1);
        let msg: Value = serde_json::from_str(&stored[0]).expect("the helper got JSON");
        assert_eq!(msg["ServerURL"], server);
        assert_eq!(msg["Username"], "bob");
        assert_eq!(msg["Secret"], "pw with \"quotes\"");
        assert_eq!(helper_get(&helper, server).expect("get"), Some(entry));
        let token = AuthEntry {
            identity_token: "tok".into(),
            ..Default::default()
        };
        helper_store(&helper, "other.example.com", &token).expect("store token");
        assert_eq!(
            helper_get(&helper, "other.example.com").expect("get"),
            Some(token)
        );
        helper_erase(&helper, server).expect("erase");
        assert_eq!(helper_get(&helper, server).expect("get"), None);
        helper_erase(&helper, server).expect("erasing twice is fine");
        let missing = dir.path().join("docker-credential-missing");
        assert!(helper_get(&missing, server).is_err());
    }

    #[test]
    fn with_registry_auth_asks_the_configured_helper_for_the_image_registry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let helper = fake_helper(dir.path());
        let entry = AuthEntry {
            username: "carol".into(),
            password: "pw".into(),
            identity_token: String::new(),
        };
        helper_store(&helper, "reg.example.com", &entry).expect("store");
        helper_store(&helper, DEFAULT_SERVER, &entry).expect("store hub");
        let config = obj(json!({
            "auths": {"reg.example.com": {}},
            "credHelpers": {"reg.example.com": "fake"}
        }));
        let program = |name: &str| dir.path().join(format!("docker-credential-{name}"));
        let c = credentials_for_image_in(&config, "reg.example.com/team/app:1", &program)
            .expect("from the helper");
        assert_eq!(c.username.as_deref(), Some("carol"));
        assert_eq!(c.password.as_deref(), Some("pw"));
        assert_eq!(c.serveraddress.as_deref(), Some("reg.example.com"));
        // Docker Hub images use the file store here (no credsStore): nothing stored there.
        assert!(credentials_for_image_in(&config, "nginx", &program).is_none());
        let config = obj(json!({"credsStore": "fake"}));
        let c = credentials_for_image_in(&config, "library/nginx:1", &program).expect("hub");
        assert_eq!(c.serveraddress.as_deref(), Some(DEFAULT_SERVER));
        assert!(credentials_for_image_in(&config, "other.example.com/x", &program).is_none());
    }
}
