//! Gallery commands while a door service runs: it holds the gallery and the camera, so
//! `edge enroll` and `edge gallery list|remove|rename` go through its admin API (with the
//! admin PIN) and print what they print without it.

use super::{Command, GalleryAction, Output};
use anyhow::{bail, Context, Result};
use edge::door::enroll_guide::Guidance;
use edge::service::client::AdminClient;
use serde_json::{json, Value};
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The socket of the door service to go through for `command`: `Some` when the command
/// changes or lists the gallery, the config has `[admin]` and a service answers there.
pub fn service_for(config: &Path, command: &Command) -> Result<Option<PathBuf>> {
    let through_service = match command {
        Command::Enroll { .. } => true,
        Command::Gallery { action } => !matches!(action, GalleryAction::Export { .. }),
        _ => false,
    };
    if !through_service {
        return Ok(None);
    }
    let admin = edge::terminal::admin_section(config)
        .map_err(|e| super::door::named_config_error(config, e))?;
    Ok(admin
        .map(|a| a.socket)
        .filter(|s| AdminClient::service_answers(s)))
}

/// The admin PIN: asked for on a terminal (not echoed), else one line of stdin.
fn read_pin(socket: &Path) -> Result<String> {
    let why = format!(
        "the door service on {} holds the gallery; its admin PIN",
        socket.display()
    );
    let pin = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("{why}: ")).context("reading the admin PIN")?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the admin PIN from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if pin.is_empty() {
        bail!("{why} is needed (give it on stdin)");
    }
    Ok(pin)
}

/// Run `command` through the service on `socket`.
pub fn run(socket: &Path, out: &Output, command: Command) -> Result<ExitCode> {
    let client = AdminClient::login(socket, &read_pin(socket)?)?;
    match command {
        Command::Enroll {
            name,
            update,
            camera: true,
            frames,
            ..
        } => enroll_live(&client, out, &name, update, frames),
        Command::Enroll {
            name,
            update,
            images,
            ..
        } => enroll(&client, out, &name, update, &images),
        Command::Gallery { action } => gallery(&client, out, action),
        _ => bail!("internal: this command does not go through the door service"),
    }
}

fn enroll(
    client: &AdminClient,
    out: &Output,
    name: &str,
    update: bool,
    images: &[PathBuf],
) -> Result<ExitCode> {
    let answer = if update {
        client.add_photos(name, images)?
    } else {
        client.enroll(name, images)?
    };
    let person = &answer["person"];
    let report = answer["images"].as_array().cloned().unwrap_or_default();
    let used = answer["templates_added"]
        .as_u64()
        .or_else(|| person["templates"].as_u64())
        .unwrap_or(0);
    let id = person["id"].as_str().unwrap_or_default();
    out.emit(
        json!({"id": id, "name": name, "templates_added": used, "images": report,
               "generation": answer["generation"]}),
        || {
            let mut s = format!(
                "enrolled {name} ({id}) from {used} of {} image(s), through the door service",
                report.len()
            );
            for r in report.iter().filter(|r| !r["skipped"].is_null()) {
                s += &format!(
                    "\n  skipped {}: {}",
                    r["image"].as_str().unwrap_or("?"),
                    r["skipped"].as_str().unwrap_or("")
                );
            }
            s
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

fn enroll_live(
    client: &AdminClient,
    out: &Output,
    name: &str,
    update: bool,
    frames: Option<usize>,
) -> Result<ExitCode> {
    let mut last_advice = None;
    let mut printed = Ok(());
    let (kind, data) = client.enroll_live(name, !update, frames, |kind, data| {
        if kind != "guidance" || printed.is_err() {
            return;
        }
        let advice = data["advice"].as_str().unwrap_or("").to_string();
        printed = (|| -> Result<()> {
            if out.json {
                let mut event = data.clone();
                event["event"] = json!("guidance");
                outln!("{event}");
            } else if last_advice.as_deref() != Some(advice.as_str())
                || advice == Guidance::Good.message()
            {
                eprintln!("[{}/{}] {advice}", data["kept"], data["wanted"]);
            }
            Ok(())
        })();
        last_advice = Some(advice);
    })?;
    printed?;
    match kind.as_str() {
        "enrolled" => {
            let id = data["person"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let used = data["templates_added"].as_u64().unwrap_or(0);
            out.emit(
                json!({"event": "enrolled", "id": id, "name": name, "templates_added": used,
                       "generation": data["generation"]}),
                || format!("enrolled {name} ({id}) from {used} camera frame(s), through the door service"),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        "failed" => bail!(
            "{}",
            data["error"].as_str().unwrap_or("the enrollment failed")
        ),
        _ => bail!("the door service ended the enrollment without an answer"),
    }
}

fn gallery(client: &AdminClient, out: &Output, action: GalleryAction) -> Result<ExitCode> {
    match action {
        GalleryAction::List => {
            let answer = client.people()?;
            let people = answer["people"].as_array().cloned().unwrap_or_default();
            out.emit(json!({"people": people}), || {
                if people.is_empty() {
                    return "no one enrolled".into();
                }
                people
                    .iter()
                    .map(|p| {
                        format!(
                            "{}  {}  ({} templates)",
                            p["id"].as_str().unwrap_or("?"),
                            p["name"].as_str().unwrap_or("?"),
                            p["templates"]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })?;
        }
        GalleryAction::Remove { who } => {
            let answer = client.remove(&who)?;
            let removed: &Value = &answer["removed"];
            let (id, name) = (
                removed["id"].as_str().unwrap_or_default(),
                removed["name"].as_str().unwrap_or_default(),
            );
            out.emit(
                json!({"removed": id, "name": name, "generation": answer["generation"]}),
                || format!("removed {name} ({id})"),
            )?;
        }
        GalleryAction::Rename { who, new_name } => {
            let answer = client.rename(&who, &new_name)?;
            let id = answer["person"]["id"].as_str().unwrap_or_default();
            out.emit(
                json!({"renamed": id, "name": new_name.trim(), "generation": answer["generation"]}),
                || format!("renamed {id} to {}", new_name.trim()),
            )?;
        }
        GalleryAction::Export { .. } => {
            bail!("internal: export reads the gallery file, not the service")
        }
    }
    Ok(ExitCode::SUCCESS)
}
