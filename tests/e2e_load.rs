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

/// A Python function whose module-level init sleeps `seconds` before it answers.
fn slow_init_source(seconds: f64) -> String {
    format!(
        "import time\ntime.sleep({seconds})\n\ndef handler(event, context):\n    return {{\"echo\": event}}\n"
    )
}

#[test]
fn a_burst_of_cold_starts_queues_in_the_start_gate_and_every_invocation_succeeds() {
    // One place in the gate: four concurrent cold starts of a function whose init takes 0.5 s
    // go through it one after another (the gauge shows the ones waiting), and all succeed.
    let server = TestServer::with_config(|c| c.max_concurrent_inits = 1);
    let name = unique_name("gate");
    server.create_python(&name, &slow_init_source(0.5), json!({}));
    let results: Vec<_> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..4)
            .map(|i| {
                let (server, name) = (&server, &name);
                s.spawn(move || server.invoke(name, format!("{{\"n\":{i}}}").as_bytes(), &[]))
            })
            .collect();
        let queued = wait_until(Duration::from_secs(20), || {
            server.metric("lah_start_gate_waiting") >= 1.0
        });
        assert!(queued, "no start ever waited in a gate of one place");
        calls
            .into_iter()
            .map(|c| c.join().expect("invoke"))
            .collect()
    });
    for resp in &results {
        expect_success(resp);
    }
    // Starts that queued for invocations an earlier instance took meanwhile still start (and
    // idle): the gate empties.
    assert!(wait_until(Duration::from_secs(30), || {
        server.metric("lah_start_gate_waiting") == 0.0
    }));
}

#[test]
fn a_slow_init_gives_up_its_place_in_the_start_gate() {
    // A function whose init sleeps 6 s must not hold the only place in the gate for all that
    // time: another function's cold start goes ahead after the init slot (2 s) and is answered
    // first. Ordering, not timing: the slow one cannot be answered in under 6 s.
    let server = TestServer::with_config(|c| c.max_concurrent_inits = 1);
    let slow = unique_name("gate-slow");
    let quick = unique_name("gate-quick");
    server.create_python(&slow, &slow_init_source(6.0), json!({"Timeout": 30}));
    server.create_python(&quick, PY_ECHO, json!({}));
    let order = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let (server, order) = (&server, &order);
        let slow_call = s.spawn(|| {
            let resp = server.invoke(&slow, b"{}", &[]);
            order.lock().unwrap().push("slow");
            resp
        });
        // The slow instance holds the gate's place (its init has begun) before the quick one asks.
        assert!(wait_until(Duration::from_secs(20), || {
            server.metric("lah_instance_starts_total") >= 1.0
        }));
        std::thread::sleep(Duration::from_millis(300));
        let resp = server.invoke(&quick, b"{}", &[]);
        order.lock().unwrap().push("quick");
        expect_success(&resp);
        expect_success(&slow_call.join().expect("slow invoke"));
    });
    assert_eq!(*order.lock().unwrap(), vec!["quick", "slow"]);
}
