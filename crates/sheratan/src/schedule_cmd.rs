//! `sheratan schedule add|list|show|pause|resume|rm|run-now`: schedules (docs/API.md,
//! "Schedules") from the command line. Reading takes any credential that reads; changing takes
//! the admin role or the mesh token.

use std::io::Write;

use clap::Subcommand;
use sheratan_proto::data::SubmitJob;
use sheratan_proto::schedules::{
    CatchUp, Overlap, RunOutcome, SchedulePatch, ScheduleSpec, ScheduleView,
};
use time::format_description::well_known::Rfc3339;

use crate::Failure;
use crate::client_args::ClientArgs;

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule: a job submitted at every tick of a cron expression.
    Add(Box<AddArgs>),
    /// Every schedule: its cron, next run, last run and counts.
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        json: bool,
    },
    /// One schedule, with its next five runs.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop submitting at ticks (jobs already submitted go on).
    Pause {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
    },
    /// Submit at ticks again, from the next one (ticks passed while paused are not caught up).
    Resume {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
    },
    /// Delete a schedule (its jobs stay).
    Rm {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
    },
    /// Submit the schedule's job now, outside its ticks.
    RunNow {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// 1 to 64 letters, digits, '-', '_' or '.'.
    pub name: String,
    /// Five fields (minute hour day-of-month month day-of-week), an optional seconds field in
    /// front, @hourly/@daily/@weekly/@monthly/@yearly, or `@every 30s`.
    #[arg(long)]
    pub cron: String,
    /// An IANA time zone name the cron expression is read in.
    #[arg(long = "tz", default_value = "UTC")]
    pub timezone: String,
    #[command(flatten)]
    pub job: crate::client_cmds::JobArgs,
    /// While the previous job has not finished: allow, skip, or queue_one.
    #[arg(long, default_value = "allow", value_parser = parse_overlap)]
    pub overlap: Overlap,
    /// Ticks passed while no hub ran: none, last, or all (the latest 100).
    #[arg(long, default_value = "none", value_parser = parse_catch_up)]
    pub catch_up: CatchUp,
    /// Spread each tick's job over up to this long after the tick: 30s, 5m (at most 1h).
    #[arg(long, value_parser = crate::client_cmds::parse_lifetime)]
    pub jitter: Option<u64>,
    /// Create it paused.
    #[arg(long)]
    pub paused: bool,
    #[arg(long)]
    pub json: bool,
}

fn parse_overlap(text: &str) -> Result<Overlap, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| format!("{text:?}: expected allow, skip or queue_one"))
}

fn parse_catch_up(text: &str) -> Result<CatchUp, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| format!("{text:?}: expected none, last or all"))
}

impl ScheduleCommand {
    pub fn client_mut(&mut self) -> &mut ClientArgs {
        match self {
            ScheduleCommand::Add(args) => &mut args.client,
            ScheduleCommand::List { client, .. }
            | ScheduleCommand::Show { client, .. }
            | ScheduleCommand::Pause { client, .. }
            | ScheduleCommand::Resume { client, .. }
            | ScheduleCommand::Rm { client, .. }
            | ScheduleCommand::RunNow { client, .. } => client,
        }
    }
}

pub async fn run(cmd: ScheduleCommand) -> Result<(), Failure> {
    match cmd {
        ScheduleCommand::Add(args) => {
            let spec = spec_of(&args)?;
            let view = args
                .client
                .data()?
                .create_schedule(&spec)
                .await
                .map_err(anyhow::Error::new)?;
            print(&view, args.json);
        }
        ScheduleCommand::List { client, json } => {
            let list = client
                .data()?
                .schedules()
                .await
                .map_err(anyhow::Error::new)?;
            if json {
                println!("{}", serde_json::to_string(&list).expect("serializes"));
            } else {
                print_list(&list.schedules);
            }
        }
        ScheduleCommand::Show { client, name, json } => {
            let view = client
                .data()?
                .schedule(&name)
                .await
                .map_err(anyhow::Error::new)?;
            print(&view, json);
        }
        ScheduleCommand::Pause { client, name } => set_paused(client, &name, true).await?,
        ScheduleCommand::Resume { client, name } => set_paused(client, &name, false).await?,
        ScheduleCommand::Rm { client, name } => {
            client
                .data()?
                .delete_schedule(&name)
                .await
                .map_err(anyhow::Error::new)?;
            println!("schedule {name} deleted (the jobs it submitted stay)");
        }
        ScheduleCommand::RunNow { client, name } => {
            let ran = client
                .data()?
                .run_schedule(&name)
                .await
                .map_err(anyhow::Error::new)?;
            println!("{}", ran.job_id);
        }
    }
    Ok(())
}

fn spec_of(args: &AddArgs) -> Result<ScheduleSpec, Failure> {
    let jitter_s = match args.jitter {
        Some(s) => u32::try_from(s).map_err(|_| crate::usage("--jitter: at most 1h".to_owned()))?,
        None => 0,
    };
    Ok(ScheduleSpec {
        name: args.name.clone(),
        cron: args.cron.clone(),
        timezone: args.timezone.clone(),
        job: SubmitJob {
            // Nobody collects a scheduled job's result through GET /v1/results?pending=1.
            follow_result: Some(false),
            ..args.job.job()?
        },
        paused: args.paused,
        overlap: args.overlap,
        catch_up: args.catch_up,
        jitter_s,
    })
}

async fn set_paused(client: ClientArgs, name: &str, paused: bool) -> Result<(), Failure> {
    let patch = SchedulePatch {
        paused: Some(paused),
        ..SchedulePatch::default()
    };
    let view = client
        .data()?
        .patch_schedule(name, &patch)
        .await
        .map_err(anyhow::Error::new)?;
    match view.next_runs.first() {
        Some(next) if !paused => println!("schedule {name} resumed; next run {}", rfc3339(*next)),
        _ => println!(
            "schedule {name} {}",
            if paused { "paused" } else { "resumed" }
        ),
    }
    Ok(())
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// `submitted job 0190… (completed)`, `skipped: why`, `missed: why`.
fn last_run(view: &ScheduleView) -> String {
    let Some(run) = &view.last_run else {
        return "never".into();
    };
    match run.outcome {
        RunOutcome::Submitted => {
            let status = view
                .last_job
                .as_ref()
                .filter(|j| run.job_id.as_deref() == Some(j.job_id.as_str()))
                .map_or("gone", |j| j.status.map_or("gone", |s| s.as_str()));
            format!(
                "{} job {} ({status})",
                rfc3339(run.tick),
                run.job_id.as_deref().unwrap_or("?")
            )
        }
        RunOutcome::Skipped | RunOutcome::Missed => format!(
            "{} {}: {}",
            rfc3339(run.tick),
            if run.outcome == RunOutcome::Skipped {
                "skipped"
            } else {
                "missed"
            },
            run.reason.as_deref().unwrap_or("")
        ),
    }
}

fn print_list(views: &[ScheduleView]) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<20} {:<24} {:<21} {:>5} {:>5} {:>5}  LAST",
        "NAME", "CRON", "NEXT RUN", "RUNS", "SKIP", "MISS"
    );
    for v in views {
        let next = if v.paused {
            "paused".to_owned()
        } else {
            v.next_runs.first().map_or("-".into(), |t| rfc3339(*t))
        };
        let cron = if v.timezone == "UTC" {
            v.cron.clone()
        } else {
            format!("{} {}", v.cron, v.timezone)
        };
        let _ = writeln!(
            out,
            "{:<20} {:<24} {:<21} {:>5} {:>5} {:>5}  {}",
            v.name,
            cron,
            next,
            v.runs,
            v.skipped,
            v.missed,
            last_run(v)
        );
    }
    if views.is_empty() {
        let _ = writeln!(
            out,
            "(no schedules: sheratan schedule add NAME --cron EXPR --kind KIND)"
        );
    }
}

fn print(view: &ScheduleView, json: bool) {
    if json {
        println!("{}", serde_json::to_string(view).expect("serializes"));
        return;
    }
    let state = if view.paused { "paused" } else { "active" };
    println!(
        "schedule {}: {} ({}), {state}",
        view.name, view.cron, view.timezone
    );
    println!("  job: kind {} on queue {}", view.job.kind, view.job.queue);
    println!(
        "  overlap {}, catch_up {}, jitter {}s",
        serde_json::to_value(view.overlap)
            .expect("serializes")
            .as_str()
            .unwrap_or(""),
        serde_json::to_value(view.catch_up)
            .expect("serializes")
            .as_str()
            .unwrap_or(""),
        view.jitter_s
    );
    let next: Vec<String> = view.next_runs.iter().map(|t| rfc3339(*t)).collect();
    println!(
        "  next runs: {}",
        if next.is_empty() {
            "none".into()
        } else {
            next.join(", ")
        }
    );
    println!("  last run: {}", last_run(view));
    println!(
        "  runs {}, skipped {}, missed {}",
        view.runs, view.skipped, view.missed
    );
}
