//! Docker's wording of durations (`units.HumanDuration`), shared by the API's status texts
//! ("Up 3 minutes", "Exited (0) 2 hours ago") and the CLI's tables.

/// "Less than a second", "5 seconds", "About a minute", "2 hours", "3 days", ...
pub fn human_duration(seconds: i64) -> String {
    match seconds.max(0) {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 3600 => match s / 60 {
            1 => "About a minute".into(),
            m => format!("{m} minutes"),
        },
        s if s < 48 * 3600 => match (s + 1800) / 3600 {
            1 => "About an hour".into(),
            h => format!("{h} hours"),
        },
        s if s < 14 * 86400 => format!("{} days", s / 86400),
        s if s < 60 * 86400 => format!("{} weeks", s / (7 * 86400)),
        s if s < 2 * 365 * 86400 => format!("{} months", s / (30 * 86400)),
        s => format!("{} years", s / (365 * 86400)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(5), "5 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(7200), "2 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
    }
}
