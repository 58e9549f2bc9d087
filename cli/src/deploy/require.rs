//! `cdctl deploy --require ENV,…`: build once, promote the same artifact.
//! An image goes to an environment only when each required environment's
//! registry has a promoted deploy of this very image (the same id, so a
//! tag moved to another build does not count) whose post-test ran and
//! passed.

use anyhow::Context;
use switchyard_client::RegistryClient;
use switchyard_model::labels::record;
use switchyard_model::{Deployment, Outcome};

use super::docker::ImageFacts;

/// An environment `--require` names, and a client of its registry.
#[derive(Clone)]
pub struct Required {
    pub environment: String,
    pub client: RegistryClient,
}

impl std::fmt::Debug for Required {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.environment)
    }
}

/// Whether `deployment` was promoted after its post-test passed.
fn passed_post_test(deployment: &Deployment) -> bool {
    deployment.outcome == Outcome::Promoted
        && deployment
            .metadata
            .get(record::TESTS_PASSED)
            .is_some_and(|tests| tests.split(',').any(|t| t == record::POST_TEST))
}

/// Why `image` (tagged `tag`) may not be deployed, naming the first
/// required environment that lacks it; `None` when every one has it.
pub async fn missing(
    required: &[Required],
    service: &str,
    tag: &str,
    image: &ImageFacts,
) -> anyhow::Result<Option<String>> {
    for Required {
        environment,
        client,
    } in required
    {
        let records = client
            .list_deployments(service, 0)
            .await
            .with_context(|| format!("reading the deployments of {service} in {environment}"))?;
        let id_of = |d: &Deployment| d.metadata.get(record::IMAGE_ID).cloned();
        if records
            .iter()
            .any(|d| passed_post_test(d) && id_of(d).as_deref() == Some(image.id.as_str()))
        {
            continue;
        }
        let moved = records
            .iter()
            .filter(|d| d.image == tag && passed_post_test(d))
            .find_map(id_of);
        return Ok(Some(match moved {
            Some(tested) => format!(
                "{environment} promoted {tag} as {tested}, but {tag} is {} here: the tag \
                 moved to another build; deploy the image {environment} tested",
                image.id
            ),
            None => format!(
                "{environment} has no promoted deploy of {tag} ({}) with a passed post-test: \
                 deploy it there first (with --post-test)",
                image.id
            ),
        }));
    }
    Ok(None)
}
