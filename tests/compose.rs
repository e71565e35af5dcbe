//! The compose walk-through (`compose.yaml`) cannot run here (no docker), so its wiring is
//! checked instead: the services it needs, the files it mounts, the ports that meet, and the
//! gateway config it runs loads with the environment compose gives it.

use std::collections::HashMap;
use std::path::PathBuf;
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compose() -> Yaml {
    let text = std::fs::read_to_string(root().join("compose.yaml")).unwrap();
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("compose.yaml is not YAML: {e}"))
        .into_iter()
        .next()
        .expect("compose.yaml is empty")
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A service's environment, with `${VAR:-default}` read as its default.
fn environment(service: &Yaml) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in service["environment"].as_hash().into_iter().flatten() {
        let value = v
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}", v.as_i64().unwrap_or_default()));
        let value = match value
            .strip_prefix("${")
            .and_then(|r| r.strip_suffix('}'))
            .and_then(|r| r.split_once(":-"))
        {
            Some((_, default)) => default.to_string(),
            None => value,
        };
        out.insert(k.as_str().unwrap().to_string(), value);
    }
    out
}

#[test]
fn the_compose_file_wires_two_gateways_redis_the_idp_and_an_echo_behind_one_entry_point() {
    let c = compose();
    let services = c["services"].as_hash().expect("services");
    let names: Vec<&str> = services.keys().filter_map(Yaml::as_str).collect();
    for needed in ["entry", "authgate-1", "authgate-2", "redis", "idp", "echo"] {
        assert!(names.contains(&needed), "no service {needed} in {names:?}");
    }
    let service = |name: &str| &c["services"][name];

    // Every dependency is a service; every mounted file exists; every build has its Dockerfile.
    for name in &names {
        let s = service(name);
        for dep in strings(&s["depends_on"]) {
            assert!(
                names.contains(&dep.as_str()),
                "{name} depends on {dep}, not a service"
            );
        }
        for volume in strings(&s["volumes"]) {
            let host = volume.split(':').next().unwrap();
            assert!(
                host.starts_with("./"),
                "{name}: {volume} mounts something outside the repository"
            );
            assert!(root().join(host).is_file(), "{name}: {host} does not exist");
        }
        if let Some(dockerfile) = s["build"]["dockerfile"].as_str() {
            let text = std::fs::read_to_string(root().join(dockerfile)).unwrap();
            if let Some(target) = s["build"]["target"].as_str() {
                assert!(
                    text.lines()
                        .any(|l| l.starts_with("FROM ") && l.ends_with(&format!(" AS {target}"))),
                    "{dockerfile} has no stage {target}"
                );
            }
        }
    }

    // One entry point publishes the proxy port, and spreads over both gateways.
    let published: Vec<(&str, String)> = names
        .iter()
        .flat_map(|n| {
            strings(&service(n)["ports"])
                .into_iter()
                .map(move |p| (*n, p))
        })
        .collect();
    let entry: Vec<&(&str, String)> = published
        .iter()
        .filter(|(_, p)| p.starts_with("8080:"))
        .collect();
    assert_eq!(entry.len(), 1, "{published:?}");
    assert_eq!(entry[0].0, "entry");
    let nginx = std::fs::read_to_string(root().join("config/compose/nginx.conf")).unwrap();
    for gateway in ["authgate-1", "authgate-2"] {
        assert!(
            nginx.contains(&format!("server {gateway}:8080")),
            "nginx does not send to {gateway}"
        );
        let s = service(gateway);
        assert_eq!(
            strings(&s["command"]),
            vec!["run", "--config", "/etc/authgate/authgate.toml"]
        );
        assert!(strings(&s["volumes"]).contains(
            &"./config/compose/authgate.toml:/etc/authgate/authgate.toml:ro".to_string()
        ));
        assert_eq!(
            s["image"].as_str(),
            service("authgate-1")["image"].as_str(),
            "both gateways run the same image"
        );
    }
    assert_eq!(
        service("authgate-1")["build"]["dockerfile"].as_str(),
        Some("Dockerfile")
    );

    // The config both gateways run loads with the environment compose gives them...
    let env = environment(service("authgate-1"));
    assert_eq!(
        env,
        environment(service("authgate-2"))
            .into_iter()
            .map(|(k, v)| if k == "AUTHGATE_INSTANCE" {
                (k, "authgate-1".into())
            } else {
                (k, v)
            })
            .collect()
    );
    let text = std::fs::read_to_string(root().join("config/compose/authgate.toml")).unwrap();
    let config = authgate::config::parse("config/compose/authgate.toml", &text, &|name| {
        env.get(name).cloned()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.proxy.listen.port(), 8080);
    assert!(
        config.session.login_key.is_some(),
        "two instances need one login key"
    );
    let authgate::config::model::SessionStoreSettings::Redis(redis) = &config.session.store else {
        panic!("sessions are not shared through Redis")
    };
    let redis_host = url::Url::parse(redis.url.expose())
        .unwrap()
        .host_str()
        .unwrap()
        .to_string();
    assert!(
        names.contains(&redis_host.as_str()),
        "the session store {redis_host} is not a service"
    );

    // ...and meets the other services: the entry point is its trusted proxy, the IdP is the
    // issuer under the name the network gives it, the echo upstream listens where it sends.
    let entry_ip = service("entry")["networks"]["gateway"]["ipv4_address"]
        .as_str()
        .expect("the entry point's fixed address");
    assert!(
        config
            .proxy
            .trusted_proxies
            .contains(entry_ip.parse().unwrap()),
        "the entry point is not a trusted proxy"
    );
    let idp = environment(service("idp"));
    assert_eq!(
        idp["DEVIDP_ISSUER"],
        config.idp.issuer.trim_end_matches('/')
    );
    let issuer_host = url::Url::parse(&config.idp.issuer)
        .unwrap()
        .host_str()
        .unwrap()
        .to_string();
    assert!(
        strings(&service("idp")["networks"]["gateway"]["aliases"]).contains(&issuer_host),
        "the gateways cannot resolve {issuer_host}"
    );
    let client = &config.clients[0];
    let registered = format!(
        "{}:{}:{}{}",
        client.client_id, env["DEMO_CLIENT_SECRET"], client.origins[0], client.redirect_path
    );
    assert!(
        idp["DEVIDP_CLIENTS"]
            .split_whitespace()
            .any(|c| c == registered),
        "the IdP does not know client {registered}"
    );
    let echo = environment(service("echo"));
    let upstream = &config.upstreams[0].addresses[0];
    assert_eq!(
        upstream.split(':').next_back(),
        echo["ECHO_LISTEN"].split(':').next_back(),
        "{upstream} vs {}",
        echo["ECHO_LISTEN"]
    );
    assert!(
        names.contains(&upstream.split(':').next().unwrap()),
        "{upstream} is not a service"
    );

    // What the README's walk-through says it shows: each instance's admin listener published
    // (9101, 9102), JSON logs, a health-checked upstream and a shadow rule.
    for (gateway, port) in [("authgate-1", 9101), ("authgate-2", 9102)] {
        let mapping = format!("{port}:{}", config.admin.listen.port());
        assert!(
            strings(&service(gateway)["ports"]).contains(&mapping),
            "{gateway} does not publish its admin listener as {mapping}"
        );
    }
    assert_eq!(config.log.format, authgate::config::model::LogFormat::Json);
    assert!(
        config.upstreams[0].health_check.is_some(),
        "the upstream is not health-checked"
    );
    assert!(config.routes.iter().any(|r| !r.enforce), "no shadow rule");
}
