//! The I/O side of remaking pools: rolling a class's new image over its
//! pools, one pool per health tick (planned by the pure
//! [`crate::roll_plan`]), and upgrading pools of an older slotpack to the
//! current storage layout at start-up. A remade pool keeps its state (the
//! agent brings its programs back) and its tenants keep their data (the
//! deployment's, see `backend::engine::tenants_volume`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::health::Tick;
use super::{Orchestrator, Result};
use crate::db::{PoolRow, RollFailure, LAYOUT};
use crate::events::{Event, RollStage};
use crate::roll_plan::{came_up, next_step, Came};
use crate::states::{Desired, PoolState};

/// How often a remade pool's agent is asked how its programs are.
const POLL: Duration = Duration::from_millis(200);

impl Orchestrator {
    /// One step of any class's rolling image update (tick lock held, so
    /// nothing else touches the pool meanwhile; it takes no new tenant):
    /// remake the next pool behind its class's image on that image and
    /// wait until its tenants run healthy. If they do not within
    /// `SLOTPACK_ROLL_TIMEOUT_MS`, the pool is remade on its old image and
    /// the class's roll stops (recorded; a new image starts a new one).
    pub(super) async fn roll_step(&self, r: &mut Tick) -> Result<()> {
        let pools = self.db.pools()?;
        let images: BTreeMap<String, String> = self
            .db
            .classes()?
            .into_iter()
            .map(|(name, spec, _, _)| (name, spec.image))
            .collect();
        let failed = self.db.roll_failures()?;
        let Some(step) = next_step(&pools, &images, &failed) else {
            return Ok(());
        };
        let Some(pool) = pools.iter().find(|p| p.number == step.pool) else {
            return Ok(());
        };
        let from = step
            .from
            .clone()
            .unwrap_or_else(|| self.cfg.pool_image.clone());
        self.emit(&Event::Roll {
            pool: pool.id(),
            step: RollStage::Started {
                class: step.class.clone(),
                from: from.clone(),
                image: step.image.clone(),
            },
        });
        self.ledger.lock().await.close_pool(pool.number)?;
        let outcome = self.remake(pool, Some(&step.image)).await;
        match outcome {
            Ok(()) => {
                self.db.set_pool_made(
                    pool.number,
                    Some(&step.image),
                    pool.layout,
                    &format!("rolled to {}", step.image),
                )?;
                self.emit(&Event::Roll {
                    pool: pool.id(),
                    step: RollStage::Done {
                        image: step.image.clone(),
                    },
                });
            }
            Err(message) => {
                let back = self.remake(pool, step.from.as_deref()).await;
                let message = match back {
                    Ok(()) => message,
                    Err(e) => format!("{message}; going back to {from} failed too: {e}"),
                };
                self.db.set_roll_failed(
                    &step.class,
                    Some(&RollFailure {
                        image: step.image.clone(),
                        pool: pool.id().to_string(),
                        message: message.clone(),
                        at: slotpack_proto::clock::now_rfc3339(),
                    }),
                )?;
                self.emit(&Event::Roll {
                    pool: pool.id(),
                    step: RollStage::Failed {
                        image: step.image.clone(),
                        from: from.clone(),
                        message: message.clone(),
                    },
                });
                r.issues.push(format!(
                    "class {}: the roll to {} stopped: {message}",
                    step.class, step.image
                ));
            }
        }
        self.ledger.lock().await.open_pool(pool.number)?;
        Ok(())
    }

    /// Start-up: remake every pool an older slotpack made (layout 1,
    /// homes inside the pool) with the deployment's tenant data mounted;
    /// its agent moves the slot homes into it. A pool that does not come
    /// back healthy keeps its layout (tried again at the next start) and
    /// is reported.
    pub(super) async fn upgrade_layouts(&self, issues: &mut Vec<String>) -> Result<()> {
        for pool in self.db.pools()? {
            if pool.layout >= LAYOUT || pool.status != PoolState::Running {
                continue;
            }
            match self.remake(&pool, pool.image.as_deref()).await {
                Ok(()) => {
                    self.db.set_pool_made(
                        pool.number,
                        pool.image.as_deref(),
                        LAYOUT,
                        "tenant data moved out of the pool",
                    )?;
                    self.emit(&Event::Roll {
                        pool: pool.id(),
                        step: RollStage::Upgraded,
                    });
                }
                Err(e) => issues.push(format!(
                    "{}: upgrading it to per-tenant data: {e} (tried again at the next start)",
                    pool.id()
                )),
            }
        }
        Ok(())
    }

    /// Remake `pool` on `image` (with the current agent and mounts) and
    /// wait until every tenant of it that should run runs healthy, for at
    /// most the roll timeout; what did not come up, if anything.
    async fn remake(&self, pool: &PoolRow, image: Option<&str>) -> std::result::Result<(), String> {
        let mut spec = pool.spec();
        spec.image = image.map(str::to_string);
        let made = self
            .backend
            .recreate_pool(&spec)
            .await
            .map_err(|e| e.to_string())?;
        let _ =
            self.ledger
                .lock()
                .await
                .set_pool_status(pool.number, PoolState::Running, Some(&made));
        let tenants = self
            .db
            .pool_tenants(pool.number)
            .map_err(|e| e.to_string())?;
        let want: Vec<String> = tenants
            .iter()
            .filter(|t| t.desired == Desired::Running)
            .map(|t| t.id.to_string())
            .collect();
        // The agent brings its programs back from its state; the stored
        // specs make sure of it.
        for t in tenants.iter().filter(|t| t.desired == Desired::Running) {
            self.put_program(pool, t, t.slot)
                .await
                .map_err(|e| format!("{}: {e}", t.id))?;
        }
        let ep = self.endpoint(pool);
        let first = self.agents.list(&ep).await.map_err(|e| e.to_string())?;
        let before: BTreeMap<String, u64> =
            first.iter().map(|s| (s.id.clone(), s.restarts)).collect();
        let deadline = Instant::now() + Duration::from_millis(self.cfg.roll_timeout_ms);
        loop {
            let seen = self.agents.list(&ep).await.map_err(|e| e.to_string())?;
            match came_up(&want, &seen, &before) {
                Came::Up => return Ok(()),
                Came::Waiting(not) if Instant::now() >= deadline => {
                    return Err(format!(
                        "{} did not run healthy within {} ms",
                        not.join(", "),
                        self.cfg.roll_timeout_ms
                    ))
                }
                Came::Waiting(_) => tokio::time::sleep(POLL).await,
            }
        }
    }
}
