//! The layers, bad input, and the example config.

use super::*;

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

#[test]
fn layers_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ttmem.toml");
    std::fs::write(&file, "region_dir = \"/from/file\"\nhttp = \"127.0.0.1:1\"\ndb = \"/file.db\"\nretention_s = 60\napi_socket_mode = \"660\"\n").unwrap();
    let get = env(&[
        ("TTMEM_CONFIG", file.to_str().unwrap()),
        ("TTMEM_HTTP", "127.0.0.1:2"),
        ("TTMEM_DB", "/env.db"),
    ]);
    let c = Config::load(
        &Overrides {
            db: Some("/flag.db".into()),
            ..Default::default()
        },
        &get,
    )
    .unwrap();
    assert_eq!(c.region_dir, PathBuf::from("/from/file"));
    assert_eq!(
        c.http,
        Some("127.0.0.1:2".parse().unwrap()),
        "environment beats the file"
    );
    assert_eq!(c.db, PathBuf::from("/flag.db"), "flags beat the environment");
    assert_eq!(c.retention, Duration::from_secs(60));
    assert_eq!(c.api_socket_mode, 0o660);
    let off = Config::load(
        &Overrides {
            no_http: true,
            ..Default::default()
        },
        &get,
    )
    .unwrap();
    assert_eq!(off.http, None);
}

#[test]
fn bad_input_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "regoin_dir = \"/typo\"\n").unwrap();
    let e = Config::load(
        &Overrides {
            config_file: Some(file.clone()),
            ..Default::default()
        },
        &env(&[]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("unknown field `regoin_dir`"), "{e}");
    let e = Config::load(
        &Overrides {
            http: Some("localhost".into()),
            ..Default::default()
        },
        &env(&[]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("expected ADDR:PORT"), "{e}");
    let e = Config::load(
        &Overrides {
            config_file: Some("/nonexistent.toml".into()),
            ..Default::default()
        },
        &env(&[]),
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("cannot read config file /nonexistent.toml"));
    std::fs::write(&file, "[[peers]]\nname = \"b\"\nurl = \"https://b:9477\"\n").unwrap();
    let e = Config::load(
        &Overrides {
            config_file: Some(file),
            ..Default::default()
        },
        &env(&[]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("invalid [[peers]]: peer b"), "{e}");
    assert!(e.to_string().contains("only http://"), "{e}");
}

#[test]
fn the_example_config_is_valid_and_documents_every_key() {
    let text = include_str!("../../../../../docs/ttmem.example.toml");
    let f = parse_file(
        &text
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|l| l.contains(" = ") || l.starts_with('['))
                    .unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    assert!(f.region_dir.is_some() && f.api_socket.is_some() && f.api_socket_mode.is_some() && f.http.is_some());
    assert!(
        f.db.is_some() && f.retention_s.is_some() && f.drain_interval_ms.is_some() && f.remove_dead_regions.is_some()
    );
    assert!(
        f.legacy_socket.is_some()
            && f.legacy_socket_mode.is_some()
            && f.legacy_socket_group.is_some()
            && f.legacy_version.is_some()
            && f.legacy_max_connections.is_some()
    );
    assert_eq!(f.legacy_socket.as_deref(), Some(DEFAULT_LEGACY_SOCKET));
    assert_eq!(f.legacy_max_connections, Some(DEFAULT_LEGACY_MAX_CONNECTIONS));
    assert_eq!(f.retention_s, Some(DEFAULT_RETENTION_S));
    assert_eq!(f.drain_interval_ms, Some(DEFAULT_DRAIN_MS));
    assert_eq!(f.http.as_deref(), Some(DEFAULT_HTTP));
    assert_eq!(f.api_max_connections, Some(DEFAULT_API_MAX_CONNECTIONS));
    assert_eq!(
        f.api_max_connections_per_user,
        Some(DEFAULT_API_MAX_CONNECTIONS_PER_USER)
    );
    assert_eq!(f.api_header_timeout_s, Some(DEFAULT_API_HEADER_TIMEOUT_S));
    assert_eq!(f.max_regions_per_user, Some(DEFAULT_MAX_REGIONS_PER_USER));
    assert_eq!(f.max_exited_processes, Some(DEFAULT_MAX_EXITED_PROCESSES));
    assert_eq!(f.max_exited_allocations, Some(DEFAULT_MAX_EXITED_ALLOCATIONS));
    assert_eq!(f.flight_recorder_events, Some(DEFAULT_FLIGHT_RECORDER_EVENTS));
    assert!(f.api_token_file.is_some() && f.api_tcp_detail == Some(false));
    assert_eq!(f.hostname.as_deref(), Some(""));
    let peers = crate::api::peers::check(f.peers.clone().unwrap()).unwrap();
    assert_eq!(
        (peers[0].name.as_str(), peers[0].target.authority.as_str()),
        ("tt-host-b", "tt-host-b:9477")
    );
    // The rules written out are exactly the built-in ones.
    let alerts = crate::alerting::AlertsConfig::from_section(f.alerts.clone().unwrap()).unwrap();
    assert_eq!(alerts.rules, ttmem_alerts::default_rules());
    assert_eq!(
        alerts.interval,
        Duration::from_secs(crate::alerting::DEFAULT_INTERVAL_S)
    );
    assert_eq!(alerts.notify.len(), 2);
}
