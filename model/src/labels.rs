//! One vocabulary: the Docker label keys users put on containers and that
//! `cdctl deploy` writes, and the metadata keys the agent records on the
//! instances it registers. Every program names them through here, so a
//! key is spelled in one place.

/// Docker label keys (on containers and Swarm services).
pub mod label {
    /// Every Switchyard label starts with this (the agent passes such labels
    /// on as metadata no further).
    pub const PREFIX: &str = "switchyard.";
    /// The service a container serves: the one label the agent requires.
    pub const SERVICE: &str = "switchyard.service";
    /// `blue` or `green`: the release color.
    pub const COLOR: &str = "switchyard.color";
    /// The deploy that started the container (`cdctl deploy` sets it).
    pub const DEPLOY_ID: &str = "switchyard.deploy-id";
    /// The Docker network whose address to register.
    pub const NETWORK: &str = "switchyard.network";
    /// The container port(s) to register, comma-separated.
    pub const PORT: &str = "switchyard.port";
    /// Comma-separated tags.
    pub const TAGS: &str = "switchyard.tags";
    /// The release version, recorded as metadata `version`.
    pub const VERSION: &str = "switchyard.version";
    /// On a Swarm service scaled to zero by `--keep-old`: how many replicas
    /// to bring back on rollback.
    pub const REPLICAS: &str = "switchyard.replicas";
    /// On a retired Swarm service that a deploy redefined as its new color:
    /// the spec it had (JSON), which that deploy's undo puts back. Kept on
    /// the engine, where only those with the Docker socket write, never in
    /// the registry's records, which any deployer of the service can.
    pub const SAVED_SPEC: &str = "switchyard.saved-spec";
    /// An HTTP health check path.
    pub const CHECK_HTTP: &str = "switchyard.check.http";
    /// A TCP health check (any value).
    pub const CHECK_TCP: &str = "switchyard.check.tcp";
    /// How often checks run, as a duration (`5s`).
    pub const CHECK_INTERVAL: &str = "switchyard.check.interval";
    /// Docker's own labels on Swarm task containers.
    pub const SWARM_SERVICE_ID: &str = "com.docker.swarm.service.id";
    pub const SWARM_SERVICE_NAME: &str = "com.docker.swarm.service.name";
    pub const SWARM_TASK_ID: &str = "com.docker.swarm.task.id";

    /// `switchyard.port.PORT.service`: registers PORT under another service.
    pub fn port_service(port: u16) -> String {
        format!("{PREFIX}port.{port}.service")
    }

    /// `switchyard.port.PORT.ignore`: PORT is not registered.
    pub fn port_ignore(port: u16) -> String {
        format!("{PREFIX}port.{port}.ignore")
    }
}

/// Instance metadata keys the agent writes.
pub mod meta {
    /// The container behind the instance: its name, id and port.
    pub const CONTAINER: &str = "container";
    pub const CONTAINER_ID: &str = "container_id";
    pub const CONTAINER_PORT: &str = "container_port";
    /// The container's image.
    pub const IMAGE: &str = "image";
    /// From the `switchyard.version` label.
    pub const VERSION: &str = "version";
    /// From the `switchyard.deploy-id` label.
    pub const DEPLOY_ID: &str = "deploy_id";
    /// The Swarm service and task of a task's container.
    pub const SWARM_SERVICE_ID: &str = "swarm_service_id";
    pub const SWARM_SERVICE: &str = "swarm_service";
    pub const SWARM_TASK_ID: &str = "swarm_task_id";
    /// When the container started (Unix ms, Docker's `State.StartedAt`):
    /// the instance's age on the dashboard.
    pub const STARTED_AT_MS: &str = "started_at_ms";
    /// Written by the registry only (`SetDraining`): the instance takes no
    /// new requests; the value says why (a rolling deploy's id). Clients
    /// cannot set it by registering, and re-registering keeps it.
    pub const DRAINING: &str = "draining";
}

/// Metadata keys of deployment records (beside the paused state and the
/// principal, which their modules own).
pub mod record {
    /// The image's id (`sha256:…`) the deploy ran: the same artifact
    /// whatever its tag says later.
    pub const IMAGE_ID: &str = "image_id";
    /// When the image was built (Unix ms, Docker's `Created`): where lead
    /// time starts.
    pub const IMAGE_CREATED_MS: &str = "image_created_ms";
    /// What kind of record it is when not a deploy: [`ROLLBACK`].
    pub const KIND: &str = "kind";
    /// A `cdctl rollback` (a flip back to the kept color).
    pub const ROLLBACK: &str = "rollback";
    /// The tests that ran and passed, comma-separated: [`PRE_TEST`],
    /// [`POST_TEST`].
    pub const TESTS_PASSED: &str = "tests_passed";
    pub const PRE_TEST: &str = "pre-test";
    pub const POST_TEST: &str = "post-test";
    /// The step a deploy in progress is at (its record is rewritten as each
    /// step begins and ends, so a dashboard can follow it).
    pub const STEP: &str = "step";
    /// On a paused deploy: what the dashboard asked of it, [`PROMOTE`] or
    /// [`ABORT`]; a deploy waiting with `--wait-for-promotion` carries it out.
    pub const REQUESTED: &str = "requested";
    pub const PROMOTE: &str = "promote";
    pub const ABORT: &str = "abort";
    /// Who asked (the registry's name for the principal) and when (Unix ms).
    pub const REQUESTED_BY: &str = "requested_by";
    pub const REQUESTED_AT_MS: &str = "requested_at_ms";
}
