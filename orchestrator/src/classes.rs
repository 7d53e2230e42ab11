//! Pool classes: named kinds of pools, each with the runtime image its
//! containers run (the slot-agent is mounted into it) and its size. A tenant
//! names one with `poolClass`; tenants without one go to the default class
//! (`SLOTPACK_POOL_IMAGE` and the `SLOTPACK_POOL_*` sizes).
//!
//! Classes come from the config file (`[classes.<name>]`, applied at every
//! start) and from `PUT /api/pool/classes/{name}`; both end up in the
//! database, which owns them. Checks and TOML reading here are pure.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use slotpack_proto::protocol::in_range;

/// Most memory of one pool, in MiB (4 TiB).
pub const MEMORY_MB: RangeInclusive<u64> = 16..=1 << 22;
/// Most CPU of one pool, in millicores (1000 CPUs).
pub const CPU_MILLIS: RangeInclusive<u64> = 10..=1_000_000;
/// Longest image reference.
pub const IMAGE_MAX_LEN: usize = 255;
/// Most node labels a class may ask for, and the longest key and value.
pub const NODE_LABELS_MAX: usize = 16;
/// Longest node label key or value.
pub const NODE_LABEL_MAX_LEN: usize = 128;

/// What a class is: `PUT /api/pool/classes/{name}` body; sizes left out
/// take the default class's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClassSpec {
    /// Image of the class's pool containers (`python:3.11-slim`,
    /// `registry/app@sha256:...`); it must be on the engine. Its
    /// environment (`PATH`, ...) reaches the programs; its `USER` and
    /// `ENTRYPOINT` do not (the agent runs as root and drops each program
    /// to its slot's user).
    #[schema(min_length = 1, max_length = 255)]
    pub image: String,
    /// Slots of each pool, 1 to `MAX_BOTS_PER_CONTAINER`.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub slots: Option<u32>,
    /// Memory of each pool in MiB (the container's limit).
    #[serde(default)]
    #[schema(minimum = 16, maximum = 4_194_304)]
    pub memory_mb: Option<u64>,
    /// CPU of each pool in millicores (the container's limit).
    #[serde(default)]
    #[schema(minimum = 10, maximum = 1_000_000)]
    pub cpu_millis: Option<u64>,
    /// Swarm backend: node labels (`docker node update --label-add`) a
    /// node must carry to run this class's pools; ignored by the other
    /// backends. At most 16, keys and values of at most 128 characters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_labels: BTreeMap<String, String>,
}

/// The size of a class's pools, all defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Slots.
    pub slots: u32,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// CPU in millicores.
    pub cpu_millis: u64,
}

impl ClassSpec {
    /// Its pools' size, with `default`'s where it names none.
    pub fn size(&self, default: Size) -> Size {
        Size {
            slots: self.slots.unwrap_or(default.slots),
            memory_mb: self.memory_mb.unwrap_or(default.memory_mb),
            cpu_millis: self.cpu_millis.unwrap_or(default.cpu_millis),
        }
    }
}

/// A class as `GET /api/pool/classes` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClassInfo {
    /// Name (`poolClass` of its tenants).
    pub name: String,
    /// Image of its pools.
    pub image: String,
    /// Slots of each pool.
    pub slots: u32,
    /// Memory of each pool in MiB.
    pub memory_mb: u64,
    /// CPU of each pool in millicores.
    pub cpu_millis: u64,
    /// Pools of the class now.
    pub pools: u32,
    /// Set by the config file (re-applied at every start).
    pub from_config: bool,
    /// Node labels its pools' nodes must carry (swarm backend).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_labels: BTreeMap<String, String>,
    /// Its rolling image update, while some pool of it runs another image
    /// (`null`: every pool runs `image`).
    #[serde(default)]
    pub roll: Option<crate::roll_plan::RollInfo>,
}

/// `GET /api/pool/classes` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClassList {
    /// Always true.
    pub success: bool,
    /// Image of the default class (tenants without `poolClass`).
    pub default_image: String,
    /// The named classes.
    pub classes: Vec<ClassInfo>,
}

/// `Ok` if `name` and `spec` make a valid class whose pools hold at most
/// `max_slots` slots. Pure.
pub fn check(name: &str, spec: &ClassSpec, max_slots: u32) -> Result<(), String> {
    if !slotpack_proto::protocol::is_valid_id(name) {
        return Err(format!(
            "invalid class name {name:?}: want ^[a-z0-9][a-z0-9_-]{{0,62}}$"
        ));
    }
    let img = &spec.image;
    if img.is_empty()
        || img.len() > IMAGE_MAX_LEN
        || img.starts_with('-')
        || img.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "invalid image {img:?}: want an image reference of 1 to {IMAGE_MAX_LEN} characters without spaces"
        ));
    }
    if let Some(s) = spec.slots {
        in_range("slots", u64::from(s), &(1..=u64::from(max_slots)))
            .map_err(|e| format!("{e} (MAX_BOTS_PER_CONTAINER: a pool's port block)"))?;
    }
    if let Some(m) = spec.memory_mb {
        in_range("memoryMb", m, &MEMORY_MB)?;
    }
    if let Some(c) = spec.cpu_millis {
        in_range("cpuMillis", c, &CPU_MILLIS)?;
    }
    if spec.node_labels.len() > NODE_LABELS_MAX {
        return Err(format!(
            "nodeLabels: at most {NODE_LABELS_MAX} labels, not {}",
            spec.node_labels.len()
        ));
    }
    for (k, v) in &spec.node_labels {
        let bad = |s: &str| s.len() > NODE_LABEL_MAX_LEN || s.chars().any(char::is_control);
        if k.is_empty() || bad(k) || bad(v) {
            return Err(format!(
                "nodeLabels: invalid label {k:?}={v:?}: want a key of 1 to {NODE_LABEL_MAX_LEN} and a value of at most {NODE_LABEL_MAX_LEN} characters, no control characters"
            ));
        }
    }
    Ok(())
}

/// The classes of a config file's `[classes.<name>]` tables: keys `image`,
/// `slots`, and `memory` (`4g`) or `memory_mb`, and `cpus` (`2`, `500m`)
/// or `cpu_millis`. Unknown keys are an error. Pure.
pub fn from_toml(table: &toml::Table) -> Result<Vec<(String, ClassSpec)>, String> {
    let mut out = Vec::new();
    for (name, v) in table {
        let t = v
            .as_table()
            .ok_or_else(|| format!("classes.{name}: want a table"))?;
        let mut spec = ClassSpec {
            image: String::new(),
            slots: None,
            memory_mb: None,
            cpu_millis: None,
            node_labels: BTreeMap::new(),
        };
        let int = |k: &str, v: &toml::Value| {
            v.as_integer()
                .and_then(|i| u64::try_from(i).ok())
                .ok_or_else(|| format!("classes.{name}.{k}: want a positive integer"))
        };
        let text = |k: &str, v: &toml::Value| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("classes.{name}.{k}: want a string"))
        };
        for (k, v) in t {
            match k.as_str() {
                "image" => spec.image = text(k, v)?,
                "slots" => {
                    spec.slots = Some(
                        u32::try_from(int(k, v)?)
                            .map_err(|_| format!("classes.{name}.slots: too large"))?,
                    )
                }
                "memory_mb" => spec.memory_mb = Some(int(k, v)?),
                "cpu_millis" => spec.cpu_millis = Some(int(k, v)?),
                "memory" => {
                    let bytes = crate::limits::parse_memory(&text(k, v)?)
                        .map_err(|e| format!("classes.{name}.memory: {e}"))?;
                    spec.memory_mb = Some(bytes >> 20);
                }
                "cpus" => {
                    let s = match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    spec.cpu_millis = Some(
                        crate::limits::parse_cpus(&s)
                            .map_err(|e| format!("classes.{name}.cpus: {e}"))?,
                    );
                }
                "node_labels" => {
                    let t = v
                        .as_table()
                        .ok_or_else(|| format!("classes.{name}.node_labels: want a table"))?;
                    for (lk, lv) in t {
                        spec.node_labels.insert(lk.clone(), text(&format!("node_labels.{lk}"), lv)?);
                    }
                }
                other => {
                    return Err(format!(
                        "classes.{name}: unknown key {other:?} (want image, slots, memory, memory_mb, cpus, cpu_millis, node_labels)"
                    ))
                }
            }
        }
        if spec.image.is_empty() {
            return Err(format!("classes.{name}: image is required"));
        }
        out.push((name.clone(), spec));
    }
    Ok(out)
}

/// A class name for `image` (for a migration that keeps each legacy
/// container's image): its reference in lower case, other characters `-`,
/// at most 63 characters. Pure.
pub fn name_for_image(image: &str) -> String {
    let mut n: String = image
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    n = n.trim_matches('-').chars().take(63).collect();
    let n = n.trim_end_matches('-').to_string();
    if n.is_empty() {
        "image".into()
    } else {
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(image: &str) -> ClassSpec {
        ClassSpec {
            image: image.into(),
            slots: None,
            memory_mb: None,
            cpu_millis: None,
            node_labels: BTreeMap::new(),
        }
    }

    #[test]
    fn names_images_and_ranges_are_checked() {
        assert!(check("freqtrade", &spec("slotpack/freqtrade:2025.1"), 10).is_ok());
        assert!(check("Bad Name", &spec("x"), 10).is_err());
        assert!(check("ok", &spec(""), 10).is_err());
        assert!(check("ok", &spec("a b"), 10).is_err());
        assert!(check("ok", &spec("--privileged"), 10).is_err());
        assert!(check("ok", &spec(&"a".repeat(256)), 10).is_err());
        let mut s = spec("x");
        s.slots = Some(11);
        assert!(check("ok", &s, 10).unwrap_err().contains("slots"));
        s.slots = Some(0);
        assert!(check("ok", &s, 10).is_err());
        s.slots = Some(10);
        s.memory_mb = Some(8);
        assert!(check("ok", &s, 10).unwrap_err().contains("memoryMb"));
        s.memory_mb = Some(4096);
        s.cpu_millis = Some(u64::MAX);
        assert!(check("ok", &s, 10).unwrap_err().contains("cpuMillis"));
    }

    #[test]
    fn sizes_default_to_the_default_class() {
        let d = Size {
            slots: 10,
            memory_mb: 4096,
            cpu_millis: 4000,
        };
        let mut s = spec("x");
        assert_eq!(s.size(d), d);
        s.slots = Some(4);
        assert_eq!(s.size(d).slots, 4);
    }

    #[test]
    fn toml_tables() {
        let t: toml::Table = r#"
            [ft]
            image = "slotpack/freqtrade:latest"
            slots = 10
            memory = "4g"
            cpus = 2
            [py]
            image = "python:3.11"
            cpu_millis = 500
        "#
        .parse()
        .unwrap();
        let got = from_toml(&t).unwrap();
        assert_eq!(got[0].0, "ft");
        assert_eq!(got[0].1.memory_mb, Some(4096));
        assert_eq!(got[0].1.cpu_millis, Some(2000));
        assert_eq!(got[1].1.cpu_millis, Some(500));
        let bad: toml::Table = "[x]\nimage = \"a\"\nimgae = \"b\"\n".parse().unwrap();
        assert!(from_toml(&bad).unwrap_err().contains("imgae"));
        let none: toml::Table = "[x]\nslots = 3\n".parse().unwrap();
        assert!(from_toml(&none).unwrap_err().contains("image is required"));
    }

    #[test]
    fn node_labels_are_bounded_and_read_from_toml() {
        let mut c = spec("slotpack/pool");
        c.node_labels.insert("zone".into(), "b".into());
        assert!(check("zoned", &c, 10).is_ok());
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["nodeLabels"]["zone"], "b");
        assert!(serde_json::to_value(spec("x"))
            .unwrap()
            .get("nodeLabels")
            .is_none());
        let mut long = c.clone();
        long.node_labels.insert("k".repeat(129), "v".into());
        assert!(check("zoned", &long, 10)
            .unwrap_err()
            .contains("nodeLabels"));
        let mut ctl = c.clone();
        ctl.node_labels.insert("k".into(), "a\nb".into());
        assert!(check("zoned", &ctl, 10).is_err());
        let mut many = c.clone();
        for i in 0..NODE_LABELS_MAX {
            many.node_labels.insert(format!("k{i}"), "v".into());
        }
        assert!(check("zoned", &many, 10)
            .unwrap_err()
            .contains("at most 16"));
        let t: toml::Table =
            toml::from_str("[zoned]\nimage = \"slotpack/pool\"\nnode_labels = { zone = \"b\" }\n")
                .unwrap();
        assert_eq!(from_toml(&t).unwrap()[0].1.node_labels["zone"], "b");
        let t: toml::Table =
            toml::from_str("[zoned]\nimage = \"x\"\nnode_labels = { zone = 1 }\n").unwrap();
        assert!(from_toml(&t).unwrap_err().contains("node_labels.zone"));
    }

    #[test]
    fn class_names_from_images() {
        assert_eq!(
            name_for_image("slotpack-test/Python:3.11"),
            "slotpack-test-python-3-11"
        );
        assert_eq!(name_for_image("::"), "image");
        assert!(name_for_image(&"a/".repeat(100)).len() <= 63);
    }
}
