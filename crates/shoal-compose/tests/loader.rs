//! The loader end to end: a corpus of broken compose files (`tests/broken/NAME.yml`), each with
//! its exact error in `NAME.err`, and good files exercising anchors, merge keys, `x-` fields,
//! `.env`, several files and standard input.
//!
//! `SHOAL_COMPOSE_BLESS=1 cargo nextest run -p shoal-compose --test loader` rewrites the
//! `.err` files from the current output (review the diff before keeping it).

use std::collections::HashMap;
use std::path::Path;

use serde_yaml::Value;
use shoal_compose::convert::{convert, ConvertContext};
use shoal_compose::{config_yaml, environment, load, ComposeError, Loaded, Source};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Loads the sources, builds the model and converts it, as `stack deploy` does before talking
/// to a daemon.
fn load_and_check(
    sources: &[Source],
    env: &HashMap<String, String>,
) -> Result<Loaded, ComposeError> {
    let loaded = load(sources, env)?;
    let file = loaded.model()?;
    let ctx = ConvertContext::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests"));
    convert("test", &file, &ctx).map_err(|e| loaded.convert_error(&e))?;
    Ok(loaded)
}

fn yaml(s: &str) -> Value {
    serde_yaml::from_str(s).expect("test yaml")
}

#[test]
fn broken_files_give_their_exact_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/broken");
    let bless = std::env::var_os("SHOAL_COMPOSE_BLESS").is_some();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/broken")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml"))
        .collect();
    names.sort();
    assert!(names.len() >= 12, "only {} broken files", names.len());
    let env = env(&[("PORT", "80")]);
    let mut failures = Vec::new();
    for name in &names {
        let text = std::fs::read_to_string(dir.join(name)).expect("read");
        let got = match load_and_check(&[Source::new(name.clone(), text)], &env) {
            Ok(_) => "(no error)".to_string(),
            Err(e) => e.to_string(),
        };
        let err_path = dir.join(name.replace(".yml", ".err"));
        if bless {
            std::fs::write(&err_path, format!("{got}\n")).expect("write .err");
            continue;
        }
        let want = std::fs::read_to_string(&err_path).unwrap_or_default();
        if got.trim_end() != want.trim_end() {
            failures.push(format!(
                "{name}:\n  want: {}\n  got:  {got}",
                want.trim_end()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn anchors_merge_keys_and_extensions() {
    let text = r#"
version: "3.8"
x-deploy: &deploy
  replicas: 2
  restart_policy:
    condition: on-failure
x-service: &service
  image: busybox
  deploy: *deploy
  x-private: dropped
services:
  a:
    <<: *service
    command: ["sleep", "1d"]
  b:
    <<: *service
    image: alpine
    x-other: dropped
x-trailer: 1
"#;
    let loaded = load_and_check(&[Source::new("stack.yml", text)], &env(&[])).expect("load");
    let expected = yaml(
        r#"
version: "3.8"
services:
  a:
    image: busybox
    deploy: {replicas: 2, restart_policy: {condition: on-failure}}
    command: ["sleep", "1d"]
  b:
    image: alpine
    deploy: {replicas: 2, restart_policy: {condition: on-failure}}
"#,
    );
    assert_eq!(loaded.value, expected);
    assert!(loaded.warnings.is_empty());
}

#[test]
fn interpolation_with_defaults_and_warnings() {
    let text = "services:\n  web:\n    image: \"${REPO:-nginx}:${TAG}\"\n    deploy:\n      replicas: ${REPLICAS}\n    labels:\n      cost: \"$$5\"\n";
    let loaded =
        load_and_check(&[Source::new("s.yml", text)], &env(&[("REPLICAS", "5")])).expect("load");
    let web = &loaded.value["services"]["web"];
    assert_eq!(web["image"], Value::from("nginx:"));
    assert_eq!(web["deploy"]["replicas"], Value::from(5));
    assert_eq!(web["labels"]["cost"], Value::from("$5"));
    assert_eq!(
        loaded.warnings,
        vec!["The \"TAG\" variable is not set. Defaulting to a blank string.".to_string()]
    );
}

#[test]
fn dotenv_beside_the_first_file_loses_to_the_process_env() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(".env"), "TAG=1.0\nREPLICAS=3\n# comment\n").expect("write");
    let env = environment(
        [("REPLICAS".to_string(), "7".to_string())],
        Some(dir.path()),
    )
    .expect("env");
    let text =
        "services:\n  web:\n    image: web:${TAG}\n    deploy:\n      replicas: ${REPLICAS}\n";
    let loaded = load_and_check(&[Source::new("s.yml", text)], &env).expect("load");
    assert_eq!(
        loaded.value["services"]["web"]["image"],
        Value::from("web:1.0")
    );
    assert_eq!(
        loaded.value["services"]["web"]["deploy"]["replicas"],
        Value::from(7)
    );
    let none = environment(Vec::new(), Some(&dir.path().join("missing"))).expect("no .env");
    assert!(none.is_empty());
}

#[test]
fn two_files_are_merged_in_order() {
    let base = Source::new(
        "docker-compose.yml",
        "version: \"3.8\"\nservices:\n  web:\n    image: web:1\n    ports: [\"4000:80\"]\n    environment: [A=1, B=2]\n    deploy:\n      replicas: 5\nnetworks:\n  webnet: {}\n",
    );
    let prod = Source::new(
        "prod.yml",
        "version: \"3.8\"\nservices:\n  web:\n    image: web:2\n    ports: [\"4000:8080\", \"443:443\"]\n    environment: {B: \"3\"}\n    deploy:\n      replicas: bad\n",
    );
    let loaded = load(&[base.clone(), prod.clone()], &env(&[])).expect("load");
    let web = &loaded.value["services"]["web"];
    assert_eq!(web["image"], Value::from("web:2"));
    assert_eq!(web["ports"], yaml("[\"4000:8080\", \"443:443\"]"));
    assert_eq!(web["environment"], yaml("{A: \"1\", B: \"3\"}"));
    // The error is in the file that set the value.
    let err = loaded.model().expect_err("bad replicas").to_string();
    assert!(
        err.starts_with("prod.yml:8: services.web.deploy.replicas: "),
        "{err}"
    );
    let err = load(
        &[
            base,
            Source::new("old.yml", "version: \"3.7\"\nservices: {}\n"),
        ],
        &env(&[]),
    )
    .expect_err("mismatch");
    assert_eq!(
        err.to_string(),
        "old.yml: version mismatched between two composefiles : 3.8 and 3.7"
    );
}

#[test]
fn standard_input() {
    let input =
        std::io::Cursor::new("services:\n  web:\n    image: ${IMAGE}\n    deploy: {replicas: x}\n");
    let source = Source::from_reader(input).expect("read");
    assert_eq!(source.name, "<stdin>");
    let loaded = load(&[source], &env(&[("IMAGE", "nginx")])).expect("load");
    assert_eq!(
        loaded.value["services"]["web"]["image"],
        Value::from("nginx")
    );
    let err = loaded.model().expect_err("bad replicas").to_string();
    assert!(
        err.starts_with("<stdin>:4: services.web.deploy.replicas: "),
        "{err}"
    );
}

#[test]
fn config_prints_the_merged_result() {
    let a = Source::new(
        "a.yml",
        "services:\n  web:\n    image: ${IMAGE}\n    deploy: {replicas: 2}\nversion: \"3.8\"\n",
    );
    let b = Source::new("b.yml", "services:\n  web:\n    deploy: {replicas: 3}\n");
    let loaded = load(&[a, b], &env(&[("IMAGE", "nginx")])).expect("load");
    assert_eq!(
        config_yaml(&loaded),
        "version: '3.8'\nservices:\n  web:\n    deploy:\n      replicas: 3\n    image: nginx\n"
    );
}
