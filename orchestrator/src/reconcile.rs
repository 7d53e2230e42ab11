//! Reconciliation of one pool: compare desired tenants (database) with the
//! programs the agent reports, and list the actions that converge them. Pure.

use std::collections::{BTreeMap, BTreeSet};

use slotpack_proto::protocol::ProgramState;

use crate::states::Desired;

/// One converging step.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Create the missing program (PUT its spec).
    Put(String),
    /// Start a program the agent holds stopped.
    Start(String),
    /// Stop a program that should not run.
    Stop(String),
    /// Remove a program from the agent (orphan, or tenant being deleted).
    Delete(String),
    /// The program is gone: drop the tenant row being deleted.
    Forget(String),
}

impl Action {
    /// Whether the step starts a program. A health tick applies every other
    /// step, in all pools, before any of these, so a tenant that moved
    /// between pools never runs in both.
    pub fn starts(&self) -> bool {
        matches!(self, Action::Put(_) | Action::Start(_))
    }

    /// The tenant the step is about.
    pub fn tenant(&self) -> &str {
        match self {
            Action::Put(id)
            | Action::Start(id)
            | Action::Stop(id)
            | Action::Delete(id)
            | Action::Forget(id) => id,
        }
    }
}

/// Actions that bring `observed` (program id → agent state) to `desired`.
///
/// Programs that ended by their own restart policy (`exited`, `fatal`) are
/// left alone: the policy decided, and fighting it would hide the failure.
/// A running tenant whose program holds another spec than the stored one
/// (`drifted`: changed behind our back) gets the stored spec again; a
/// stopped one gets it when it is started.
pub fn plan(
    desired: &BTreeMap<String, Desired>,
    observed: &BTreeMap<String, ProgramState>,
    drifted: &BTreeSet<String>,
) -> Vec<Action> {
    let mut out = BTreeSet::new();
    for (id, want) in desired {
        match (want, observed.get(id)) {
            (Desired::Running, Some(_)) if drifted.contains(id) => {
                out.insert(Action::Put(id.clone()));
            }
            (Desired::Running, None) => {
                out.insert(Action::Put(id.clone()));
            }
            (Desired::Running, Some(ProgramState::Stopped)) => {
                out.insert(Action::Start(id.clone()));
            }
            (Desired::Stopped, Some(s))
                if !matches!(s, ProgramState::Stopped | ProgramState::Stopping) =>
            {
                out.insert(Action::Stop(id.clone()));
            }
            (Desired::Deleting, Some(_)) => {
                out.insert(Action::Delete(id.clone()));
            }
            (Desired::Deleting, None) => {
                out.insert(Action::Forget(id.clone()));
            }
            _ => {}
        }
    }
    for id in observed.keys() {
        if !desired.contains_key(id) {
            out.insert(Action::Delete(id.clone()));
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProgramState as S;

    fn map<V: Clone>(v: &[(&str, V)]) -> BTreeMap<String, V> {
        v.iter().map(|(k, x)| (k.to_string(), x.clone())).collect()
    }

    #[test]
    fn converged_pools_need_nothing() {
        let d = map(&[("a", Desired::Running), ("b", Desired::Stopped)]);
        let o = map(&[("a", S::Running), ("b", S::Stopped)]);
        assert!(plan(&d, &o, &BTreeSet::new()).is_empty());
        let o = map(&[("a", S::Backoff), ("b", S::Stopping)]);
        assert!(plan(&d, &o, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn missing_are_created_and_orphans_removed() {
        let d = map(&[("a", Desired::Running), ("b", Desired::Stopped)]);
        let o = map(&[("x", S::Running)]);
        assert_eq!(
            plan(&d, &o, &BTreeSet::new()),
            vec![Action::Put("a".into()), Action::Delete("x".into())]
        );
    }

    #[test]
    fn desired_state_wins_over_the_agents() {
        let d = map(&[("a", Desired::Running), ("b", Desired::Stopped)]);
        let o = map(&[("a", S::Stopped), ("b", S::Running)]);
        assert_eq!(
            plan(&d, &o, &BTreeSet::new()),
            vec![Action::Start("a".into()), Action::Stop("b".into())]
        );
    }

    #[test]
    fn deletions_finish() {
        let d = map(&[("a", Desired::Deleting), ("b", Desired::Deleting)]);
        let o = map(&[("a", S::Running)]);
        assert_eq!(
            plan(&d, &o, &BTreeSet::new()),
            vec![Action::Delete("a".into()), Action::Forget("b".into())]
        );
    }

    #[test]
    fn a_drifted_spec_is_put_back_while_running() {
        let d = map(&[("a", Desired::Running), ("b", Desired::Stopped)]);
        let o = map(&[("a", S::Exited), ("b", S::Stopped)]);
        let drifted: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        assert_eq!(plan(&d, &o, &drifted), vec![Action::Put("a".into())]);
    }

    #[test]
    fn policy_endings_are_left_alone() {
        let d = map(&[("a", Desired::Running), ("b", Desired::Running)]);
        let o = map(&[("a", S::Exited), ("b", S::Fatal)]);
        assert!(plan(&d, &o, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn only_put_and_start_start_programs() {
        let id = || "a".to_string();
        assert!(Action::Put(id()).starts() && Action::Start(id()).starts());
        for a in [
            Action::Stop(id()),
            Action::Delete(id()),
            Action::Forget(id()),
        ] {
            assert!(!a.starts(), "{a:?}");
        }
    }
}
