//! Scheduler benches: the data plane's own cost of one warm invocation, without sockets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use tokio::sync::{mpsc, oneshot};

use lambda_at_home::config::Config;
use lambda_at_home::dataplane::scheduler::Scheduler;
use lambda_at_home::model::types::{
    Function, FunctionConfig, FunctionTable, InstanceId, InvokeContext, InvokeOutcome, RequestId,
};
use lambda_at_home::model::{ControlMsg, Invocation, Permit, Switchboard};

fn function() -> Arc<Function> {
    let config = FunctionConfig {
        name: "bench".into(),
        runtime: "python3.12".into(),
        handler: "h.handler".into(),
        role: String::new(),
        description: String::new(),
        timeout_s: 3,
        memory_mb: 128,
        environment: BTreeMap::new(),
        code_sha256: String::new(),
        code_size: 0,
        last_modified: String::new(),
        revision_id: String::new(),
        reserved_concurrency: None,
        layers: Vec::new(),
        logging: Default::default(),
    };
    Arc::new(Function::latest(config, std::env::temp_dir(), 1))
}

struct Rig {
    shared: Arc<Switchboard>,
    sched: Scheduler,
    function: Arc<Function>,
    instance: InstanceId,
    trace: Arc<str>,
}

fn invocation(
    rig: &Rig,
) -> (
    Invocation,
    oneshot::Receiver<lambda_at_home::model::types::InvokeResult>,
) {
    let (reply, rx) = oneshot::channel();
    let inv = Invocation {
        id: RequestId::random(),
        function: rig.function.clone(),
        payload: Bytes::from_static(br#"{"hello":"world"}"#),
        context: InvokeContext {
            client_context: None,
            trace_id: rig.trace.clone(),
            alias_arn: None,
        },
        accepted_at: Instant::now(),
        want_log_tail: false,
        reply,
        permit: Permit::acquire(&rig.shared, &rig.function).expect("under the limit"),
        stream: None,
    };
    (inv, rx)
}

/// A scheduler with one warm instance (started through the real cold-start path).
fn rig() -> Rig {
    let f = function();
    let mut table = FunctionTable::default();
    table.versions.insert("bench".to_string(), f.clone());
    let (control_tx, mut control_rx) = mpsc::unbounded_channel();
    let (core_tx, _core_rx) = mpsc::unbounded_channel();
    // The scheduler never touches the data dir; the config only needs one.
    let config = Config::for_tests(std::env::temp_dir().join("lah-bench"), 0, 0);
    let shared = Arc::new(Switchboard::new(
        Arc::new(config),
        Arc::new(ArcSwap::from_pointee(table)),
        vec![core_tx],
        control_tx,
    ));
    let sched = Scheduler::new(0, shared.clone());
    let mut rig = Rig {
        shared,
        sched,
        function: f,
        instance: InstanceId(0),
        trace: Arc::from("Root=1-00000000-000000000000000000000000"),
    };
    let (inv, _rx) = invocation(&rig);
    rig.sched.submit(inv);
    let Ok(ControlMsg::StartInstance { id, .. }) = control_rx.try_recv() else {
        panic!("a cold start was requested");
    };
    rig.instance = id;
    let mut work = rig.sched.next(id).expect("instance known");
    let w = work.try_recv().expect("the pending invocation");
    let body = Bytes::from_static(b"{}");
    rig.sched
        .respond(id, w.id.as_str(), InvokeOutcome::Success { body })
        .expect("own request");
    rig
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let guard = rt.enter();
    let mut rig = rig();
    // Admit, park the runtime, dispatch, complete: one warm invocation on one core.
    c.bench_function("scheduler/warm_invoke_same_core", |b| {
        b.iter(|| {
            let mut work = rig.sched.next(rig.instance).expect("instance known");
            let (inv, mut rx) = invocation(&rig);
            rig.sched.submit(inv);
            let w = work.try_recv().expect("dispatched at once");
            let body = Bytes::from_static(b"{}");
            rig.sched
                .respond(rig.instance, w.id.as_str(), InvokeOutcome::Success { body })
                .expect("own request");
            rx.try_recv().expect("completed")
        })
    });
    drop(guard);
    // The cross-core hand-off: an invocation-sized message to another thread and a reply back.
    c.bench_function("scheduler/cross_core_handoff_round_trip", |b| {
        let (to_tx, mut to_rx) = mpsc::unbounded_channel::<(u64, oneshot::Sender<u64>)>();
        let worker = std::thread::spawn(move || {
            while let Some((v, back)) = to_rx.blocking_recv() {
                let _ = back.send(v + 1);
            }
        });
        b.iter(|| {
            let (tx, rx) = oneshot::channel();
            to_tx.send((1, tx)).expect("worker alive");
            rx.blocking_recv().expect("reply")
        });
        drop(to_tx);
        worker.join().expect("worker exits");
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
