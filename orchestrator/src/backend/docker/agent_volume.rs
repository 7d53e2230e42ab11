//! The agent volume, `<deployment>-agent-<pool image id>`: the static
//! slot-agent every pool container runs, whatever its image, copied out of
//! `SLOTPACK_POOL_IMAGE`.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, VolumeCreateRequest};
use bollard::query_parameters::{CreateContainerOptions, ListVolumesOptions};

use super::DockerBackend;
use crate::backend::engine::other;
use crate::backend::engine::{DEPLOYMENT_LABEL, POOL_LABEL};
use crate::backend::BackendError;

/// Where `SLOTPACK_POOL_IMAGE` holds the static agent.
const AGENT_DIR_IN_POOL_IMAGE: &str = "/usr/local/bin";

impl DockerBackend {
    /// Fill the agent volume from the pool image unless it is filled: Docker
    /// copies an image's files into an empty named volume when a container
    /// that mounts it there is created. Idempotent; also repairs a volume
    /// left empty by a crash between its creation and the copy.
    pub(super) async fn ensure_agent_volume(&self, pool_id: &str) -> Result<(), BackendError> {
        let mut labels = self.labels("agent");
        labels.remove(POOL_LABEL);
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(self.agent_volume.clone()),
                labels: Some(labels.clone()),
                ..Default::default()
            })
            .await
            .map_err(other)?;
        // One per pool: pools may be created side by side.
        let name = format!("{}-fill-{pool_id}", self.agent_volume);
        let _ = self.force_remove(&name).await;
        let config = ContainerCreateBody {
            image: Some(self.image.clone()),
            entrypoint: Some(vec![format!("{AGENT_DIR_IN_POOL_IMAGE}/slot-agent")]),
            cmd: Some(vec!["--version".to_string()]),
            labels: Some(labels),
            host_config: Some(HostConfig {
                binds: Some(vec![format!(
                    "{}:{AGENT_DIR_IN_POOL_IMAGE}",
                    self.agent_volume
                )]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let made = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                config,
            )
            .await;
        let _ = self.force_remove(&name).await;
        made.map_err(|e| other(format!("filling the agent volume: {e}")))?;
        Ok(())
    }

    /// Remove this deployment's agent volumes of earlier pool images that
    /// no container uses any more (Docker refuses those in use).
    pub(super) async fn drop_stale_agent_volumes(&self) {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{DEPLOYMENT_LABEL}={}", self.deployment)],
        )]);
        let Ok(list) = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filters),
            }))
            .await
        else {
            return;
        };
        let prefix = format!("{}-agent-", self.deployment);
        for v in list.volumes.unwrap_or_default() {
            if v.name.starts_with(&prefix) && v.name != self.agent_volume {
                let _ = self
                    .docker
                    .remove_volume(
                        &v.name,
                        None::<bollard::query_parameters::RemoveVolumeOptions>,
                    )
                    .await;
            }
        }
    }
}
