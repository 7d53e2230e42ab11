//! The environment a program starts from, before its spec's `env` and the
//! agent's `HOME`, `PORT`, `SLOT`, `TENANT_ID` and `HOST` are laid over it.
//!
//! In a pool container of a runtime image (`--inherit-env`) that is the
//! image's environment (`PATH`, `LANG`, `VIRTUAL_ENV`, ...), which the agent,
//! as PID 1, received; everything the agent reads as its own setting or
//! secret is taken out. Elsewhere (an agent on a host, whose environment is
//! the orchestrator's) it is only a default `PATH`.

/// `PATH` of programs when none is inherited or given.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Settings the agent (and the orchestrator) read from the environment
/// beyond the `SLOT_` and `SLOTPACK_` prefixes.
const SETTINGS: [&str; 7] = [
    "POOL_MODE_ENABLED",
    "MAX_BOTS_PER_CONTAINER",
    "POOL_BASE_PORT",
    "HEALTH_CHECK_INTERVAL",
    "BOT_PING_TIMEOUT",
    "MAX_RESTART_ATTEMPTS",
    "RESTART_COOLDOWN",
];

/// Whether `name` is the agent's own (a setting or the token): never passed
/// to a program. Pure.
pub fn is_agents_own(name: &str) -> bool {
    name.starts_with("SLOT_") || name.starts_with("SLOTPACK_") || SETTINGS.contains(&name)
}

/// The base environment of programs from the agent's `inherited` one
/// (nothing when not inheriting): the inherited variables that are not the
/// agent's own, and `PATH` ([`DEFAULT_PATH`] when none is left). Pure.
pub fn base(inherited: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = inherited
        .into_iter()
        .filter(|(k, _)| !is_agents_own(k) && !k.is_empty())
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env.sort();
    env
}

/// The agent's environment as it started, its non-UTF-8 entries skipped.
pub fn of_this_process() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_token_and_settings_stay_with_the_agent() {
        let got = base(pairs(&[
            ("SLOT_AGENT_TOKEN", "secret"),
            ("SLOTPACK_ADMIN_TOKEN", "secret"),
            ("HEALTH_CHECK_INTERVAL", "100"),
            ("PATH", "/opt/venv/bin:/usr/bin"),
            ("LANG", "C.UTF-8"),
        ]));
        assert_eq!(
            got,
            pairs(&[("LANG", "C.UTF-8"), ("PATH", "/opt/venv/bin:/usr/bin")])
        );
    }

    #[test]
    fn a_default_path_when_none_is_inherited() {
        assert_eq!(base(Vec::new()), pairs(&[("PATH", DEFAULT_PATH)]));
    }
}
