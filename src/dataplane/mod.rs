//! The data plane: one thread per core, each running its own tokio-uring runtime.
//!
//! A core owns: its SO_REUSEPORT listeners for the User API and the Runtime API, the per-instance
//! Runtime API listeners of the instances whose home it is, a slab of its connections, and its
//! scheduler (the instances homed here, their pending invocations). Nothing a core owns is touched
//! by another thread; cores talk to each other and to the control plane only through `CoreMsg` and
//! `ControlMsg` channels (`crate::model`), and read the function table through a lock-free `ArcSwap`.
//! A core never blocks: no locks on the invoke path, no blocking syscalls but the occasional
//! non-blocking log drain.

pub mod conn;
pub mod core;
pub mod function_url;
pub mod identity;
pub mod logs;
pub mod peer;
pub mod ring;
pub mod runtime_api;
pub mod scheduler;
pub mod streaming;
pub mod user_api;
pub mod websocket;
