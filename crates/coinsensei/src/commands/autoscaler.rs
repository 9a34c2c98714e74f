//! `coinsensei autoscaler status`: each `[[autoscale]]` queue's policy, its depth now, the
//! workers of its kind and chain that are live, and the autoscaler's recent decisions as the
//! audit log holds them (written by the `up` that runs the autoscaler).

use std::process::ExitCode;

use serde_json::Value;

use crate::config::Settings;

pub async fn status(settings: Settings, as_json: bool) -> anyhow::Result<ExitCode> {
    if settings.autoscale.is_empty() {
        if as_json {
            println!("[]");
        } else {
            println!(
                "no queue is autoscaled (add an [[autoscale]] entry to the configuration: see coinsensei.example.toml)"
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let store = super::connect_existing(&settings).await?;
    let backend = super::open_queue(&settings, &store).await?;
    let queues = web::scaling::status(&store, backend.as_ref(), &settings.scaled_queues()).await;
    store.close().await;
    let queues = web::scaling::status_json(&queues?);
    print(queues.as_array().map_or(&[][..], Vec::as_slice), as_json)
}

fn print(queues: &[Value], as_json: bool) -> anyhow::Result<ExitCode> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(queues)?);
        return Ok(ExitCode::SUCCESS);
    }
    for queue in queues {
        let policy = &queue["policy"];
        let workers: Vec<&str> = queue["workers"]
            .as_array()
            .map(|workers| workers.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        println!(
            "{}: depth {}, {} worker(s) live [{}]",
            queue["queue"].as_str().unwrap_or("?"),
            queue["depth"],
            workers.len(),
            workers.join(", "),
        );
        println!(
            "  policy: {}..{} workers, up by {} above depth {}, down by {} below {}, cooldown {} s",
            policy["min_workers"],
            policy["max_workers"],
            policy["scale_up_step"],
            policy["scale_up_depth"],
            policy["scale_down_step"],
            policy["scale_down_depth"],
            policy["cooldown_seconds"],
        );
        let decisions = queue["decisions"].as_array().cloned().unwrap_or_default();
        if decisions.is_empty() {
            println!("  no scaling yet");
        }
        for decision in decisions {
            println!(
                "  {}  {:<22} {} -> {} at depth {}",
                decision["at"].as_str().unwrap_or("?"),
                decision["action"].as_str().unwrap_or("?"),
                decision["from"],
                decision["to"],
                decision["depth"],
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
