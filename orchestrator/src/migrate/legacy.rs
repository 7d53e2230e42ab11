//! Reading a legacy container (its `docker inspect`) into the tenant it
//! becomes: pure functions, no Docker and no API.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::api_types::{CreateTenant, Resources};
use slotpack_proto::protocol::TenantId;

/// A legacy container and the tenant it becomes.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Container name (without `/`).
    pub container: String,
    /// Its image, as it was created from (the tenant's pool class runs it).
    pub image: Option<String>,
    /// The tenant request.
    pub tenant: CreateTenant,
    /// Its bind mounts and named volumes, each a tenant volume at the same
    /// path (their content is copied in).
    pub mounts: Vec<LegacyMount>,
    /// Mounts it has that do not become volumes, and why.
    pub left_out: Vec<String>,
}

/// A bind mount or named volume of a legacy container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyMount {
    /// `bind` or `volume`.
    pub kind: String,
    /// The host folder (bind) or the volume's folder on the host.
    pub source: String,
    /// The volume's name (named volumes).
    pub name: Option<String>,
    /// Where the container sees it (the tenant volume's path).
    pub destination: String,
}

/// The mounts of `inspect` that become tenant volumes (bind mounts and
/// named volumes whose path a volume may have), and the others with the
/// reason they do not. `is_dir` tells whether a bind source is a folder
/// (a file bind cannot be a volume).
pub fn mounts_from_inspect(
    inspect: &Value,
    is_dir: impl Fn(&str) -> bool,
) -> (Vec<LegacyMount>, Vec<String>) {
    let (mut keep, mut left) = (Vec::new(), Vec::new());
    for m in inspect["Mounts"].as_array().into_iter().flatten() {
        let kind = m["Type"].as_str().unwrap_or_default().to_string();
        let dest = m["Destination"].as_str().unwrap_or_default().to_string();
        let source = m["Source"].as_str().unwrap_or_default().to_string();
        if kind != "bind" && kind != "volume" {
            left.push(format!("{dest}: a {kind} mount holds no data to keep"));
            continue;
        }
        if kind == "bind" && !is_dir(&source) {
            left.push(format!(
                "{dest}: a bind of a file ({source}), not a folder: not a volume"
            ));
            continue;
        }
        let as_volume = slotpack_proto::protocol::VolumeSpec { path: dest.clone() };
        let mut all: Vec<_> = keep
            .iter()
            .map(|k: &LegacyMount| slotpack_proto::protocol::VolumeSpec {
                path: k.destination.clone(),
            })
            .collect();
        all.push(as_volume);
        if let Err(e) = slotpack_proto::protocol::check_volumes(&all) {
            left.push(format!("{dest}: {e}"));
            continue;
        }
        keep.push(LegacyMount {
            kind,
            source,
            name: m["Name"].as_str().map(str::to_string),
            destination: dest,
        });
    }
    (keep, left)
}

/// A legacy value as a spec value: `$` written `$$` (spec values expand
/// `${PORT}` and friends), and the legacy port itself, when it is the whole
/// value, `${PORT}`. Pure.
pub fn spec_value(legacy: &str, legacy_port: Option<&str>) -> String {
    if legacy_port == Some(legacy) {
        return "${PORT}".into();
    }
    legacy.replace('$', "$$")
}

/// `*`-wildcard match of a whole name.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// A valid tenant id from a container name: lower case, other characters `-`.
pub fn tenant_id_from(name: &str) -> String {
    let mut id: String = name
        .trim_start_matches('/')
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    id = id.trim_start_matches(['-', '_']).chars().take(63).collect();
    if id.is_empty() {
        id = "tenant".into();
    }
    id
}

/// The tenant a legacy container becomes, from its `docker inspect` JSON,
/// with its mounts as volumes (see [`mounts_from_inspect`]). Pure but for
/// `is_dir`.
pub fn candidate_with_mounts(
    inspect: &Value,
    is_dir: impl Fn(&str) -> bool,
) -> Result<Candidate, String> {
    let mut c = candidate_from_inspect(inspect)?;
    let (mounts, left_out) = mounts_from_inspect(inspect, is_dir);
    c.tenant.volumes = mounts
        .iter()
        .map(|m| slotpack_proto::protocol::VolumeSpec {
            path: m.destination.clone(),
        })
        .collect();
    c.mounts = mounts;
    c.left_out = left_out;
    Ok(c)
}

/// The tenant a legacy container becomes, from its `docker inspect` JSON
/// (its mounts aside). Pure.
pub fn candidate_from_inspect(inspect: &Value) -> Result<Candidate, String> {
    let name = inspect["Name"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches('/')
        .to_string();
    let cfg = &inspect["Config"];
    let labels = cfg["Labels"].as_object().cloned().unwrap_or_default();
    let label = |k: &str| labels.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let mut argv: Vec<String> = Vec::new();
    for key in ["Entrypoint", "Cmd"] {
        if let Some(a) = cfg[key].as_array() {
            argv.extend(a.iter().filter_map(|v| v.as_str().map(str::to_string)));
        }
    }
    if argv.is_empty() {
        return Err(format!("{name}: no entrypoint or command"));
    }
    let pairs: Vec<(&str, &str)> = cfg["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str()?.split_once('='))
        .collect();
    let port = pairs.iter().find(|(k, _)| *k == "PORT").map(|(_, v)| *v);
    let mut env = BTreeMap::new();
    for (k, v) in &pairs {
        // The image's own environment (`PATH`, ...) reaches the program in
        // its pool anyway; the agent sets its reserved names itself.
        let from_image = ["PATH", "HOSTNAME"].contains(k);
        if !from_image && !slotpack_proto::protocol::RESERVED_ENV.contains(k) {
            env.insert(k.to_string(), spec_value(v, port));
        }
    }
    // The command is not expanded, its arguments are.
    let args: Vec<String> = argv[1..].iter().map(|a| spec_value(a, port)).collect();
    let working_dir = cfg["WorkingDir"]
        .as_str()
        .filter(|d| d.starts_with('/') && *d != "/")
        .map(str::to_string);
    let host = &inspect["HostConfig"];
    let memory_mb = host["Memory"]
        .as_u64()
        .filter(|m| *m > 0)
        .map_or(256, |m| (m >> 20).max(1));
    let cpu_millis = host["NanoCpus"]
        .as_u64()
        .filter(|c| *c > 0)
        .map_or(100, |c| c / 1_000_000);
    let ping_path = label("slotpack.ping-path").unwrap_or_else(|| "/api/v1/ping".into());
    let id = label("slotpack.tenant").unwrap_or_else(|| tenant_id_from(&name));
    let id = TenantId::parse(&id).map_err(|e| format!("{name}: label slotpack.tenant: {e}"))?;
    let tenant = CreateTenant {
        id,
        owner: label("slotpack.owner"),
        command: argv[0].clone(),
        args,
        env,
        resources: Resources {
            memory_mb,
            cpu_millis,
            ..Resources::default()
        },
        ping: serde_json::from_value(
            json!({"kind": "http", "path": ping_path, "intervalMs": 5000}),
        )
        .ok(),
        restart: Default::default(),
        stop: Default::default(),
        pool_class: label("slotpack.pool-class"),
        max_lifetime_seconds: None,
        working_dir,
        volumes: Vec::new(),
    };
    Ok(Candidate {
        container: name,
        image: cfg["Image"]
            .as_str()
            .filter(|i| !i.is_empty())
            .map(str::to_string),
        tenant,
        mounts: Vec::new(),
        left_out: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match("bot-*", "bot-1"));
        assert!(glob_match("*-legacy", "a-legacy"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxcyyb"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("bot-*", "robot-1"));
    }

    #[test]
    fn ids_from_names() {
        assert_eq!(tenant_id_from("/Legacy.Bot_1"), "legacy-bot_1");
        assert_eq!(tenant_id_from("--x"), "x");
        assert_eq!(tenant_id_from("/"), "tenant");
    }

    #[test]
    fn candidate_from_a_legacy_container() {
        let inspect = json!({
            "Name": "/legacy-bot-7",
            "Config": {"Entrypoint": ["/usr/local/bin/test-tenant"], "Cmd": ["--host", "0.0.0.0"],
                       "Env": ["PORT=8080", "PATH=/bin", "API_KEY=k"],
                       "Labels": {"slotpack.legacy": "true", "slotpack.owner": "alice"}},
            "HostConfig": {"Memory": 268435456u64, "NanoCpus": 500000000u64}
        });
        let c = candidate_from_inspect(&inspect).unwrap();
        assert_eq!(c.container, "legacy-bot-7");
        assert_eq!(c.tenant.id, "legacy-bot-7");
        assert_eq!(c.tenant.owner.as_deref(), Some("alice"));
        assert_eq!(c.tenant.command, "/usr/local/bin/test-tenant");
        assert_eq!(c.tenant.args, ["--host", "0.0.0.0"]);
        assert_eq!(
            c.tenant.env,
            BTreeMap::from([("API_KEY".to_string(), "k".to_string())])
        );
        assert_eq!(
            (c.tenant.resources.memory_mb, c.tenant.resources.cpu_millis),
            (256, 500)
        );
        assert!(candidate_from_inspect(&json!({"Name": "/x", "Config": {}})).is_err());
        assert_eq!(c.image, None);
    }

    #[test]
    fn binds_and_named_volumes_become_volumes_at_the_same_paths() {
        let inspect = json!({
            "Name": "/ft-2",
            "Config": {"Cmd": ["freqtrade", "trade"]},
            "Mounts": [
                {"Type": "bind", "Source": "/srv/ft-2/user_data", "Destination": "/freqtrade/user_data"},
                {"Type": "volume", "Name": "ft-2-logs", "Source": "/var/lib/docker/volumes/ft-2-logs/_data", "Destination": "/logs"},
                {"Type": "bind", "Source": "/srv/ft-2/config.json", "Destination": "/freqtrade/config.json"},
                {"Type": "tmpfs", "Destination": "/scratch"},
                {"Type": "bind", "Source": "/dev/snd", "Destination": "/dev/snd"}
            ]
        });
        let c = candidate_with_mounts(&inspect, |s| !s.ends_with(".json")).unwrap();
        let paths: Vec<&str> = c.tenant.volumes.iter().map(|v| v.path.as_str()).collect();
        assert_eq!(paths, ["/freqtrade/user_data", "/logs"]);
        assert_eq!(c.mounts[1].name.as_deref(), Some("ft-2-logs"));
        assert_eq!(c.left_out.len(), 3, "{:?}", c.left_out);
        assert!(c.left_out[0].contains("file"), "{:?}", c.left_out);
        assert!(c.left_out[1].contains("tmpfs"), "{:?}", c.left_out);
        assert!(
            c.left_out[2].contains("/proc, /sys or /dev"),
            "{:?}",
            c.left_out
        );
    }

    #[test]
    fn legacy_values_keep_their_meaning_in_a_spec() {
        let inspect = json!({
            "Name": "/ft-1",
            "Config": {"Image": "freqtradeorg/freqtrade:stable", "WorkingDir": "/freqtrade",
                       "Cmd": ["python3", "bot.py", "--port", "8080", "--price=$5"],
                       "Env": ["PORT=8080", "FT_PORT=8080", "PASS=a$b", "HOST=0.0.0.0"]}
        });
        let c = candidate_from_inspect(&inspect).unwrap();
        assert_eq!(c.image.as_deref(), Some("freqtradeorg/freqtrade:stable"));
        assert_eq!(c.tenant.working_dir.as_deref(), Some("/freqtrade"));
        assert_eq!(
            c.tenant.args,
            ["bot.py", "--port", "${PORT}", "--price=$$5"]
        );
        assert_eq!(c.tenant.env["FT_PORT"], "${PORT}");
        assert_eq!(c.tenant.env["PASS"], "a$$b");
        assert!(!c.tenant.env.contains_key("HOST"));
        // As the agent expands them: the slot's port, the literal `$`.
        let port = |n: &str| (n == "PORT").then(|| "9003".to_string());
        assert_eq!(
            slotpack_proto::expand::expand(&c.tenant.env["PASS"], port).unwrap(),
            "a$b"
        );
        assert_eq!(
            slotpack_proto::expand::expand(&c.tenant.args[2], port).unwrap(),
            "9003"
        );
    }
}
