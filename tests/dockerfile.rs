//! The Dockerfile, checked against the repository without a container
//! engine (none runs in CI, issue 18): every file it copies exists, it
//! builds and copies the binary Cargo.toml names, the configuration it
//! bakes in loads and listens where it says, and it exposes those ports.

use mcp_oauth_gateway::config::Config;
use std::path::{Path, PathBuf};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The Dockerfile's instructions, continuation lines joined, comments out.
fn instructions() -> Vec<String> {
    let text = read("Dockerfile").replace("\\\n", " ");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn with_keyword<'a>(all: &'a [String], keyword: &str) -> Vec<&'a str> {
    all.iter()
        .filter_map(|l| l.strip_prefix(keyword))
        .map(str::trim)
        .collect()
}

#[test]
fn every_copied_path_is_in_the_repository() {
    let all = instructions();
    let copies = with_keyword(&all, "COPY ");
    assert!(copies.len() >= 4, "{copies:?}");
    for copy in copies.iter().filter(|c| !c.starts_with("--from")) {
        let words: Vec<&str> = copy.split_whitespace().collect();
        for source in &words[..words.len() - 1] {
            assert!(repo(source).exists(), "COPY source `{source}` is missing");
        }
    }
}

#[test]
fn the_binary_built_is_the_one_cargo_names_and_the_one_copied() {
    let manifest = read("Cargo.toml");
    let bin = manifest
        .split("[[bin]]")
        .nth(1)
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("name = ")))
        .map(|n| n.trim_matches('"'))
        .expect("a [[bin]] with a name");
    let all = instructions();
    let build = format!("cargo build --release --locked --bin {bin}");
    assert!(
        with_keyword(&all, "RUN ")
            .iter()
            .any(|r| r.contains(&build)),
        "the builder runs `{build}` (the same --locked build as ./run)"
    );
    let workdir = with_keyword(&all, "WORKDIR ")[0];
    let built = format!("--from=builder {workdir}/target/release/{bin} /usr/local/bin/{bin}");
    assert!(
        with_keyword(&all, "COPY ").contains(&built.as_str()),
        "copies {built}"
    );
    assert!(
        with_keyword(&all, "ENTRYPOINT ").contains(&format!("[\"{bin}\"]").as_str()),
        "runs {bin}"
    );
    assert!(with_keyword(&all, "USER ")
        .iter()
        .all(|u| !u.starts_with('0') && !u.starts_with("root")));
}

/// Applies the Dockerfile's `sed -e 's|^from|to|'` edits to the example
/// configuration; each must change exactly one line.
fn baked_config(edits: &[(String, String)]) -> String {
    let mut lines: Vec<String> = read("config.example.yaml")
        .lines()
        .map(str::to_owned)
        .collect();
    for (from, to) in edits {
        let anchored = from.strip_prefix('^').expect("anchored edit");
        let hits: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].starts_with(anchored))
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "`{from}` matches one line of config.example.yaml"
        );
        lines[hits[0]] = lines[hits[0]].replacen(anchored, to, 1);
    }
    lines.join("\n")
}

#[test]
fn the_baked_in_configuration_loads_and_listens_on_the_exposed_ports() {
    let all = instructions();
    let cmd = with_keyword(&all, "CMD ")[0];
    let config_path = "/etc/mcp-oauth-gateway/config.yaml";
    assert!(cmd.contains(config_path), "{cmd}");
    assert!(
        read("README.md").contains(config_path),
        "the README names the config path"
    );
    assert!(with_keyword(&all, "COPY ")
        .contains(&format!("config.example.yaml {config_path}").as_str()));
    let edits: Vec<(String, String)> = all
        .iter()
        .filter(|l| l.contains(config_path) && l.starts_with("RUN sed"))
        .flat_map(|l| l.split("-e '").skip(1))
        .map(|e| {
            let parts: Vec<&str> = e.split('|').collect();
            (parts[1].to_owned(), parts[2].to_owned())
        })
        .collect();
    assert_eq!(edits.len(), 3, "{edits:?}");
    let dir = std::env::temp_dir().join(format!("mcpgw-docker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.yaml");
    std::fs::write(&file, baked_config(&edits)).unwrap();
    let config = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
    let metrics = config.metrics_listen.expect("metrics listener");
    assert_eq!(metrics.to_string(), "0.0.0.0:9464");
    let data_dir = &config.authorization_server.as_ref().unwrap().data_dir;
    assert_eq!(data_dir, Path::new("/var/lib/mcp-oauth-gateway"));
    assert!(with_keyword(&all, "VOLUME ").contains(&"/var/lib/mcp-oauth-gateway"));
    let exposed = with_keyword(&all, "EXPOSE ")[0];
    let ports: Vec<u16> = exposed
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(ports, vec![config.listen.port(), metrics.port()]);
}
