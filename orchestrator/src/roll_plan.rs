//! Rolling image updates, the decisions (pure): which pool a class's new
//! image goes to next, whether a rolled pool's tenants came up, and how a
//! class's roll stands. The health tick does the I/O (`service::rolls`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use slotpack_proto::protocol::{ProgramState, ProgramStatus};
use utoipa::ToSchema;

use crate::db::{PoolRow, RollFailure};
use crate::states::{PoolMode, PoolState};

/// One step of a roll: remake pool `pool` on `image` (from `from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollStep {
    /// The pool's number.
    pub pool: u64,
    /// Its class.
    pub class: String,
    /// The image it runs now.
    pub from: Option<String>,
    /// The class's image.
    pub image: String,
}

/// Whether `pool` is behind its class's image (`images`: class → image).
fn behind<'a>(pool: &PoolRow, images: &'a BTreeMap<String, String>) -> Option<&'a String> {
    let class = pool.class.as_ref()?;
    let image = images.get(class)?;
    (pool.image.as_ref() != Some(image)).then_some(image)
}

/// The next pool to roll: the first running shared pool whose image is not
/// its class's, unless that class's roll gave up on that very image.
/// One pool at a time, in pool order.
pub fn next_step(
    pools: &[PoolRow],
    images: &BTreeMap<String, String>,
    failed: &BTreeMap<String, RollFailure>,
) -> Option<RollStep> {
    pools.iter().find_map(|p| {
        let image = behind(p, images)?;
        let class = p.class.clone()?;
        let gave_up = failed.get(&class).is_some_and(|f| &f.image == image);
        let ready = p.status == PoolState::Running && p.mode == PoolMode::Pooled;
        (ready && !gave_up).then(|| RollStep {
            pool: p.number,
            class,
            from: p.image.clone(),
            image: image.clone(),
        })
    })
}

/// What a rolled pool's agent reports, against what it should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Came {
    /// Every program that should run runs and answers its ping.
    Up,
    /// Not yet: these do not (yet).
    Waiting(Vec<String>),
}

/// Whether the programs `want` (ids of tenants desired running) all run
/// healthy in `seen` and none restarted since `before` (restarts by id, as
/// read right after the pool came back).
pub fn came_up(want: &[String], seen: &[ProgramStatus], before: &BTreeMap<String, u64>) -> Came {
    let not: Vec<String> = want
        .iter()
        .filter(|id| {
            !seen.iter().any(|s| {
                &s.id == *id
                    && s.state == ProgramState::Running
                    && s.healthy
                    && before.get(*id).is_none_or(|r| s.restarts <= *r)
            })
        })
        .cloned()
        .collect();
    if not.is_empty() {
        Came::Up
    } else {
        Came::Waiting(not)
    }
}

/// How a class's roll stands (`/api/pool/classes`); absent when every
/// pool of the class runs its image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollInfo {
    /// `rolling` (pools are being remade one at a time) or `failed` (a
    /// pool's tenants failed on the image: it went back, the roll stopped;
    /// a new image starts a new roll).
    pub state: String,
    /// The image rolled to.
    pub image: String,
    /// Pools of the class on it.
    pub pools_updated: u32,
    /// Pools of the class.
    pub pools_total: u32,
    /// Why it stopped, when it did.
    pub failure: Option<RollFailure>,
}

/// The roll of class `class` (its image `image`) over `pools`.
pub fn roll_info(
    class: &str,
    image: &str,
    pools: &[PoolRow],
    failed: Option<&RollFailure>,
) -> Option<RollInfo> {
    let mine: Vec<&PoolRow> = pools
        .iter()
        .filter(|p| p.class.as_deref() == Some(class))
        .collect();
    let updated = mine
        .iter()
        .filter(|p| p.image.as_deref() == Some(image))
        .count() as u32;
    let total = mine.len() as u32;
    if updated == total {
        return None;
    }
    let failure = failed.filter(|f| f.image == image).cloned();
    Some(RollInfo {
        state: if failure.is_some() {
            "failed"
        } else {
            "rolling"
        }
        .into(),
        image: image.to_string(),
        pools_updated: updated,
        pools_total: total,
        failure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: u64, class: &str, image: &str, status: PoolState) -> PoolRow {
        PoolRow {
            class: Some(class.into()),
            image: Some(image.into()),
            status,
            ..PoolRow::for_tests(n)
        }
    }

    fn status(id: &str, state: ProgramState, healthy: bool, restarts: u64) -> ProgramStatus {
        serde_json::from_value(serde_json::json!({
            "id": id, "state": state, "pid": null, "slot": 0, "port": 9000,
            "restarts": restarts, "healthy": healthy, "lastExit": null,
            "lastPing": null, "rssBytes": 0, "startedAt": null
        }))
        .unwrap()
    }

    #[test]
    fn pools_behind_their_class_roll_one_at_a_time_unless_the_roll_gave_up() {
        let images = BTreeMap::from([("py".to_string(), "py:2".to_string())]);
        let pools = [
            pool(1, "py", "py:2", PoolState::Running),
            pool(2, "py", "py:1", PoolState::Failed),
            pool(3, "py", "py:1", PoolState::Running),
            pool(4, "other", "x", PoolState::Running),
        ];
        let none = BTreeMap::new();
        let step = next_step(&pools, &images, &none).unwrap();
        assert_eq!(
            step,
            RollStep {
                pool: 3,
                class: "py".into(),
                from: Some("py:1".into()),
                image: "py:2".into()
            }
        );
        let failed = BTreeMap::from([(
            "py".to_string(),
            RollFailure {
                image: "py:2".into(),
                pool: "pool-3".into(),
                message: "m".into(),
                at: String::new(),
            },
        )]);
        assert_eq!(next_step(&pools, &images, &failed), None);
        // A failure of an older image does not hold a new one back.
        let newer = BTreeMap::from([("py".to_string(), "py:3".to_string())]);
        assert_eq!(next_step(&pools, &newer, &failed).unwrap().pool, 1);
        // The roll's state: 1 of 3 pools updated, then failed.
        let info = roll_info("py", "py:2", &pools, None).unwrap();
        assert_eq!(
            (info.state.as_str(), info.pools_updated, info.pools_total),
            ("rolling", 1, 3)
        );
        let info = roll_info("py", "py:2", &pools, failed.get("py")).unwrap();
        assert_eq!(info.state, "failed");
        assert_eq!(roll_info("other", "x", &pools, None), None);
    }

    #[test]
    fn a_rolled_pool_is_up_when_every_wanted_program_runs_healthy_without_a_restart() {
        let want = vec!["a".to_string(), "b".to_string()];
        let before = BTreeMap::from([("a".to_string(), 0), ("b".to_string(), 2)]);
        let up = [
            status("a", ProgramState::Running, true, 0),
            status("b", ProgramState::Running, true, 2),
        ];
        assert_eq!(came_up(&want, &up, &before), Came::Up);
        let flapping = [
            status("a", ProgramState::Running, true, 1),
            status("b", ProgramState::Backoff, false, 3),
        ];
        assert_eq!(
            came_up(&want, &flapping, &before),
            Came::Waiting(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            came_up(&want, &up[..1], &before),
            Came::Waiting(vec!["b".into()])
        );
    }
}
