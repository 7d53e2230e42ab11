//! Prometheus text exposition of the agent and its programs.

use std::fmt::Write;

use crate::supervisor::Supervisor;
use slotpack_proto::protocol::ProgramState;

/// Render all metrics in Prometheus text format 0.0.4.
pub fn render(s: &Supervisor) -> String {
    let programs = s.list();
    let mut o = String::with_capacity(256 + programs.len() * 900);
    let family = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut o,
        "slot_agent_uptime_seconds",
        "gauge",
        "Seconds since the agent started.",
    );
    let _ = writeln!(o, "slot_agent_uptime_seconds {}", s.uptime().as_secs());
    family(
        &mut o,
        "slot_agent_programs",
        "gauge",
        "Programs known to the agent.",
    );
    let _ = writeln!(o, "slot_agent_programs {}", programs.len());

    family(
        &mut o,
        "slot_agent_program_up",
        "gauge",
        "1 while the program has a process.",
    );
    for p in &programs {
        let _ = writeln!(
            o,
            "slot_agent_program_up{{id=\"{}\",slot=\"{}\"}} {}",
            p.id,
            p.slot,
            u8::from(p.pid.is_some())
        );
    }
    family(
        &mut o,
        "slot_agent_program_healthy",
        "gauge",
        "1 while running and answering pings.",
    );
    for p in &programs {
        let _ = writeln!(
            o,
            "slot_agent_program_healthy{{id=\"{}\"}} {}",
            p.id,
            u8::from(p.healthy)
        );
    }
    family(
        &mut o,
        "slot_agent_program_state",
        "gauge",
        "1 for the program's current state.",
    );
    for p in &programs {
        for st in ProgramState::ALL {
            let _ = writeln!(
                o,
                "slot_agent_program_state{{id=\"{}\",state=\"{}\"}} {}",
                p.id,
                st.as_str(),
                u8::from(p.state == st)
            );
        }
    }
    family(
        &mut o,
        "slot_agent_program_restarts_total",
        "counter",
        "Restarts of the program.",
    );
    for p in &programs {
        let _ = writeln!(
            o,
            "slot_agent_program_restarts_total{{id=\"{}\"}} {}",
            p.id, p.restarts
        );
    }
    family(
        &mut o,
        "slot_agent_program_rss_bytes",
        "gauge",
        "Resident memory of the program's process group.",
    );
    for p in &programs {
        let _ = writeln!(
            o,
            "slot_agent_program_rss_bytes{{id=\"{}\"}} {}",
            p.id, p.rss_bytes
        );
    }
    family(
        &mut o,
        "slot_agent_program_ping_latency_seconds",
        "gauge",
        "Round trip of the latest ping.",
    );
    for p in &programs {
        if let Some(lp) = &p.last_ping {
            let _ = writeln!(
                o,
                "slot_agent_program_ping_latency_seconds{{id=\"{}\"}} {}",
                p.id,
                lp.latency_ms / 1000.0
            );
        }
    }
    family(
        &mut o,
        "slot_agent_program_ping_ok",
        "gauge",
        "1 if the latest ping succeeded.",
    );
    for p in &programs {
        if let Some(lp) = &p.last_ping {
            let _ = writeln!(
                o,
                "slot_agent_program_ping_ok{{id=\"{}\"}} {}",
                p.id,
                u8::from(lp.ok)
            );
        }
    }
    o
}
