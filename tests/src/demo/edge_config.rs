//! The edge.toml files the demo writes, and TOML literals for command-line overrides.

use std::path::Path;

/// A TOML literal for `--set key=value` (paths quoted and escaped).
pub fn toml_str(p: &Path) -> String {
    toml::Value::String(p.display().to_string()).to_string()
}

/// The edge.toml of a door terminal on synthetic aligned crops (no detector): `model` (a
/// `[model.*]` table), an encrypted `gallery` beside the config, frames from `frames/`, a
/// simulated relay for `edge run --dry-run`, and an audit log. The demo and the bench's door
/// section run the same terminal.
pub fn door_config_toml(written_by: &str, model: &str, gallery: &str) -> String {
    format!(
        r#"# Written by {written_by}: the door terminal on synthetic aligned crops.
[model]
flip_fusion = false
condition = "auto"

{model}
# The synthetic faces are already aligned 112x112 crops: no detector.
[detector]
aligned = true

[gallery]
path = {gallery}
key_file = "gallery.key"

[quality]
min_eye_distance_px = 20.0
min_sharpness = 5.0
max_roll_deg = 30.0
max_yaw_ratio = 0.4
min_detector_score = 0.7

[camera]
source = "dir"
path = "frames"
fps = 10

[door.relay]
chip = "/dev/gpiochip0"
line = 17
active = "high"
unlock_ms = 200

[door.policy]
agree_frames = 3
agree_window_ms = 1000
leave_ms = 300
cooldown_ms = 300
lockout_after_unknowns = 1000

[audit]
path = "audit.jsonl"
"#,
        gallery = toml::Value::String(gallery.to_string()),
    )
}
