//! The machine and the time a measurement was taken on: every benchmark table carries both
//! (`edge bench`, `maskgate-bench`, the demo report), so one description serves them all.

/// "CPU model, N cores, M GiB, os/arch", from /proc (parts it cannot read are left out).
pub fn description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| matches!(k.trim(), "model name" | "Model" | "Hardware" | "cpu model"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(String::new(), |kib| format!(", {:.0} GiB", kib / 1048576.0));
    format!(
        "{model}, {cores} cores{mem_gib}, {}/{}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// `YYYY-MM-DD HH:MM UTC` for Unix seconds.
pub fn utc_minute(unix: u64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix as i64) {
        Ok(t) => format!("{} {:02}:{:02} UTC", ymd(t), t.hour(), t.minute()),
        Err(_) => format!("{unix} s after 1970 (UTC)"),
    }
}

/// Today's date (UTC) as `YYYY-MM-DD`, from the system clock.
pub fn utc_today() -> String {
    ymd(time::OffsetDateTime::now_utc())
}

fn ymd(t: time::OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_minute_of_known_instants() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_minute(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_minute(1_795_512_300), "2026-11-24 09:25 UTC");
    }

    #[test]
    fn today_is_an_iso_date() {
        let d = utc_today();
        assert_eq!(d.len(), 10, "{d}");
        assert!(d.starts_with("20"), "{d}");
    }

    #[test]
    fn description_names_cores_and_platform() {
        let d = description();
        assert!(d.contains(" cores"), "{d}");
        assert!(d.ends_with(&format!(
            "{}/{}",
            std::env::consts::OS,
            std::env::consts::ARCH
        )));
    }
}
