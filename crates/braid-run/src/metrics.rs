//! The engine's metrics, named in one place. They go to whatever recorder
//! the process installs (`braid serve` exports them at /metrics); without
//! one, recording them costs nothing.

use std::time::Duration;

pub const ACTIVE_AGENTS: &str = "braid_active_agents";
pub const QUEUE_DEPTH: &str = "braid_ready_tasks";
pub const DISPATCHED: &str = "braid_dispatched_total";
pub const GATE_DURATION: &str = "braid_gate_duration_seconds";
pub const COOLDOWNS: &str = "braid_cooldowns_total";
pub const RESCUES: &str = "braid_rescues_total";
pub const AGENT_TOKENS: &str = "braid_agent_tokens_total";
pub const AGENT_COST: &str = "braid_agent_cost_microdollars_total";

/// Registers descriptions (call once per process).
pub fn describe() {
    metrics::describe_gauge!(ACTIVE_AGENTS, "Agent processes running now");
    metrics::describe_gauge!(QUEUE_DEPTH, "Tasks ready to start");
    metrics::describe_counter!(DISPATCHED, "Attempts started");
    metrics::describe_histogram!(
        GATE_DURATION,
        metrics::Unit::Seconds,
        "Gate run time (label cached=true|false)"
    );
    metrics::describe_counter!(COOLDOWNS, "Rate-limit cooldowns, by agent");
    metrics::describe_counter!(RESCUES, "Expired claims taken back");
    metrics::describe_counter!(
        AGENT_TOKENS,
        "Tokens agents reported, by agent and kind (input, output, cache_read, cache_write)"
    );
    metrics::describe_counter!(
        AGENT_COST,
        "What agents reported they cost, in millionths of a US dollar, by agent"
    );
}

pub fn active_agents(n: usize) {
    metrics::gauge!(ACTIVE_AGENTS).set(n as f64);
}

pub fn queue_depth(n: u64) {
    metrics::gauge!(QUEUE_DEPTH).set(n as f64);
}

pub fn dispatched() {
    metrics::counter!(DISPATCHED).increment(1);
}

pub fn gate(duration: Duration, cached: bool) {
    metrics::histogram!(GATE_DURATION, "cached" => if cached { "true" } else { "false" })
        .record(duration.as_secs_f64());
}

pub fn cooldown(agent: &str) {
    metrics::counter!(COOLDOWNS, "agent" => agent.to_owned()).increment(1);
}

pub fn rescue() {
    metrics::counter!(RESCUES).increment(1);
}

/// What an agent CLI reported of one run.
pub fn agent_usage(agent: &str, r: &crate::adapter::Report) {
    for (kind, n) in [
        ("input", r.input_tokens),
        ("output", r.output_tokens),
        ("cache_read", r.cache_read_tokens),
        ("cache_write", r.cache_write_tokens),
    ] {
        metrics::counter!(AGENT_TOKENS, "agent" => agent.to_owned(), "kind" => kind).increment(n);
    }
    if let Some(c) = r.cost_usd {
        // Counters count whole units: millionths of a dollar.
        metrics::counter!(AGENT_COST, "agent" => agent.to_owned())
            .increment((c * 1e6).round() as u64);
    }
}
