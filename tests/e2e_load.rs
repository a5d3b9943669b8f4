//! End-to-end test of the server under a steady closed-loop load with the process executor: an
//! in-process server, real Python runtimes, 50 workers that invoke one function again as soon
//! as they are answered. Not timed (the machine is shared): it checks that nothing fails and
//! that the pool of instances tracks the concurrency (docs/scheduler.md, "Instances track
//! concurrency"). The same test with the Docker executor is in `e2e_docker.rs`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// Init limit of the load test's server. Not timed: on a shared 2-CPU machine 50 runtimes
/// initialising at once beside other builds can take longer than Lambda's 10 s, which is not
/// what this test checks (the scheduler's and the executor's behaviour under load is).
const LOAD_INIT_TIMEOUT_S: u64 = 120;
/// Closed-loop workers.
const CONCURRENCY: usize = 50;
/// Measured part of the run, after every worker has been answered twice.
const MEASURED: Duration = Duration::from_secs(4);

const PY_ECHO: &str = "def handler(event, context):\n    return {\"echo\": event}\n";

#[test]
fn closed_loop_at_concurrency_50_fails_nothing_and_runs_at_most_c_plus_10_percent_instances() {
    // Exclusive: 50 runtimes load the machine; other test servers' cold starts would suffer.
    let server = TestServer::exclusive(|c| c.init_timeout_s = LOAD_INIT_TIMEOUT_S);
    let name = unique_name("load");
    server.create_python(&name, PY_ECHO, json!({}));
    let run = closed_loop(&server, &name, CONCURRENCY, MEASURED);
    eprintln!("closed loop, process executor: {run:?}");
    assert!(
        run.errors.is_empty(),
        "{} of {} invokes failed, first: {:?}",
        run.errors.len(),
        run.ok + run.errors.len() as u64,
        run.errors.first()
    );
    assert!(run.ok > 0);
    assert!(
        run.instances_max <= instance_bound(CONCURRENCY),
        "{} instances for {CONCURRENCY} workers (bound {})",
        run.instances_max,
        instance_bound(CONCURRENCY)
    );
    assert!(
        instances_now(&server) <= instance_bound(CONCURRENCY),
        "instances after the run"
    );
}
