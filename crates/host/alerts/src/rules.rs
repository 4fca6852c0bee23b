//! Rules as the config file writes them (`[[alerts.rules]]`), checked when read: a bad rule is
//! an error that names the rule and the field, and the TOML reader adds the line.

use serde::Deserialize;
use ttmem_model::api::AlertRuleInfo;

/// How urgent an alert is (Alertmanager's `severity` label).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Worth acting on soon.
    #[default]
    Warning,
    /// Worth acting on now.
    Critical,
}

impl Severity {
    /// The label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A line of use: a share of the capacity, or bytes (for chips whose capacity no source gives,
/// like those only TT-Metal's counter files describe).
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Level {
    /// Percent of the capacity.
    Percent(f64),
    /// Bytes.
    Bytes(u64),
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Level::Percent(p) => write!(f, "{p}%"),
            Level::Bytes(b) => write!(f, "{}", ttmem_model::short_bytes(*b)),
        }
    }
}

/// What a rule watches.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// A chip's buffer type is used at least `above`; it clears below `clear_below`
    /// (hysteresis: a chip hovering at the line does not flap).
    Threshold {
        /// One buffer type, or every one.
        category: Option<String>,
        /// Fires at or above this.
        above: Level,
        /// Clears below this.
        clear_below: Level,
    },
    /// A chip's buffer type fills within `within_s` at the trend of the last `window_s`
    /// seconds, with a fit at least `min_r2` good (a flat or noisy series makes no forecast).
    Forecast {
        /// One buffer type, or every one with a capacity.
        category: Option<String>,
        /// Fires when the forecast time to full is below this.
        within_s: u64,
        /// The history the line is fitted to.
        window_s: u64,
        /// The least fit quality.
        min_r2: f64,
    },
    /// The largest free block is small while much is free: an allocation can fail although
    /// memory is free.
    Fragmentation {
        /// One buffer type, or every one with a capacity.
        category: Option<String>,
        /// Fires when the largest free block of a bank is below this share of the bank's free
        /// space...
        largest_free_below_percent: f64,
        /// ...while at least this share of the capacity is free.
        free_above_percent: f64,
    },
    /// An exited process left at least `min_bytes` allocated.
    LeftBehind {
        /// The least bytes left behind that alert.
        min_bytes: u64,
    },
    /// A running process's bytes on a chip's buffer type grew steadily over `window_s`: by at
    /// least `min_growth_bytes`, on a line at least `min_r2` good.
    LeakSuspect {
        /// The history looked at.
        window_s: u64,
        /// The least growth over the window.
        min_growth_bytes: u64,
        /// The least fit quality.
        min_r2: f64,
    },
    /// A process lost events (its detail is incomplete); clears after `quiet_s` without a loss.
    EventLoss {
        /// Seconds without a new loss that clear it.
        quiet_s: u64,
    },
}

impl Condition {
    /// The kind's name, as the config and the API write it.
    pub fn kind(&self) -> &'static str {
        match self {
            Condition::Threshold { .. } => "threshold",
            Condition::Forecast { .. } => "forecast",
            Condition::Fragmentation { .. } => "fragmentation",
            Condition::LeftBehind { .. } => "left_behind",
            Condition::LeakSuspect { .. } => "leak_suspect",
            Condition::EventLoss { .. } => "event_loss",
        }
    }

    /// The condition, in words.
    pub fn describe(&self) -> String {
        let of = |c: &Option<String>| c.clone().unwrap_or_else(|| "any buffer type".into());
        match self {
            Condition::Threshold {
                category,
                above,
                clear_below,
            } => format!(
                "{} of a chip at least {above} used (clears below {clear_below})",
                of(category)
            ),
            Condition::Forecast {
                category,
                within_s,
                window_s,
                min_r2,
            } => format!(
                "{} of a chip forecast full within {within_s} s (a line over the last {window_s} s, R² ≥ {min_r2})",
                of(category)
            ),
            Condition::Fragmentation {
                category,
                largest_free_below_percent,
                free_above_percent,
            } => format!(
                "{}: largest free block below {largest_free_below_percent}% of the free space while over {free_above_percent}% is free",
                of(category)
            ),
            Condition::LeftBehind { min_bytes } => {
                format!("an exited process left at least {min_bytes} bytes allocated")
            }
            Condition::LeakSuspect {
                window_s,
                min_growth_bytes,
                min_r2,
            } => format!(
                "a process's bytes on a chip grew by at least {min_growth_bytes} over {window_s} s, steadily (R² ≥ {min_r2})"
            ),
            Condition::EventLoss { quiet_s } => {
                format!("a process lost events (clears after {quiet_s} s without a loss)")
            }
        }
    }
}

/// One rule: a condition, how long it must hold, and how urgent it is.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct Rule {
    /// Its name, unique (Alertmanager's `alertname`).
    pub name: String,
    /// How urgent.
    pub severity: Severity,
    /// Seconds the condition must hold before the alert fires (pending until then).
    pub for_s: u64,
    /// What it watches.
    pub condition: Condition,
}

impl Rule {
    /// The rule as the API lists it.
    pub fn info(&self) -> AlertRuleInfo {
        AlertRuleInfo {
            name: self.name.clone(),
            kind: self.condition.kind().into(),
            severity: self.severity.as_str().into(),
            for_s: self.for_s,
            condition: self.condition.describe(),
        }
    }
}

/// The rules ttmem runs when the config names none: they help out of the box and stay quiet on
/// a healthy host.
pub fn default_rules() -> Vec<Rule> {
    let rule = |name: &str, severity, for_s, condition| Rule {
        name: name.into(),
        severity,
        for_s,
        condition,
    };
    vec![
        rule(
            "TtmemDramHigh",
            Severity::Warning,
            60,
            Condition::Threshold {
                category: Some("DRAM".into()),
                above: Level::Percent(90.0),
                clear_below: Level::Percent(85.0),
            },
        ),
        rule(
            "TtmemDramFullSoon",
            Severity::Warning,
            60,
            Condition::Forecast {
                category: Some("DRAM".into()),
                within_s: 3600,
                window_s: 600,
                min_r2: 0.8,
            },
        ),
        rule(
            "TtmemFragmented",
            Severity::Warning,
            60,
            Condition::Fragmentation {
                category: None,
                largest_free_below_percent: 10.0,
                free_above_percent: 25.0,
            },
        ),
        rule(
            "TtmemLeftBehind",
            Severity::Info,
            0,
            Condition::LeftBehind { min_bytes: 1 },
        ),
        rule(
            "TtmemLeakSuspect",
            Severity::Warning,
            0,
            Condition::LeakSuspect {
                window_s: 600,
                min_growth_bytes: 64 << 20,
                min_r2: 0.9,
            },
        ),
        rule(
            "TtmemEventLoss",
            Severity::Warning,
            0,
            Condition::EventLoss { quiet_s: 60 },
        ),
    ]
}

/// Checks a rule set as a whole: names are unique.
pub fn check_rules(rules: &[Rule]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for r in rules {
        if !seen.insert(r.name.as_str()) {
            return Err(format!("two alert rules are named {:?}; names must be unique", r.name));
        }
    }
    Ok(())
}

/// A rule as written, every field optional; [`Rule::try_from`] checks that the kind's fields are
/// there and sensible, and that no other kind's field is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    kind: String,
    severity: Option<Severity>,
    for_s: Option<u64>,
    category: Option<String>,
    above_percent: Option<f64>,
    clear_below_percent: Option<f64>,
    above_bytes: Option<u64>,
    clear_below_bytes: Option<u64>,
    within_s: Option<u64>,
    window_s: Option<u64>,
    min_r2: Option<f64>,
    largest_free_below_percent: Option<f64>,
    free_above_percent: Option<f64>,
    min_bytes: Option<u64>,
    min_growth_bytes: Option<u64>,
    quiet_s: Option<u64>,
}

/// The longest duration a rule may name: a week.
const MAX_SECONDS: u64 = 7 * 24 * 3600;

impl TryFrom<RawRule> for Rule {
    type Error = String;

    fn try_from(r: RawRule) -> Result<Rule, String> {
        let name = r.name.trim().to_string();
        if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control()) {
            return Err(format!(
                "alert rule name {:?} must be 1 to 128 printable characters",
                r.name
            ));
        }
        let ctx = |msg: String| format!("alert rule {name:?} ({}): {msg}", r.kind);
        let percent = |field: &str, v: Option<f64>, default: Option<f64>| -> Result<f64, String> {
            let v = v.or(default).ok_or_else(|| ctx(format!("needs {field}")))?;
            if !(0.0..=100.0).contains(&v) {
                return Err(ctx(format!("{field} = {v} is not a percentage (0 to 100)")));
            }
            Ok(v)
        };
        let seconds = |field: &str, v: Option<u64>, default: u64, least: u64| -> Result<u64, String> {
            let v = v.unwrap_or(default);
            if v < least || v > MAX_SECONDS {
                return Err(ctx(format!("{field} = {v} must be {least} to {MAX_SECONDS} seconds")));
            }
            Ok(v)
        };
        let r2 = |v: Option<f64>, default: f64| -> Result<f64, String> {
            let v = v.unwrap_or(default);
            if !(0.0..=1.0).contains(&v) {
                return Err(ctx(format!("min_r2 = {v} must be 0 to 1")));
            }
            Ok(v)
        };
        let category = r.category.clone().filter(|c| !c.trim().is_empty());
        let condition = match r.kind.as_str() {
            "threshold" => {
                let (above, clear_below) = match (r.above_percent, r.above_bytes) {
                    (Some(_), Some(_)) => return Err(ctx("give above_percent or above_bytes, not both".into())),
                    (None, None) => return Err(ctx("needs above_percent (or above_bytes)".into())),
                    (Some(_), None) => {
                        if r.clear_below_bytes.is_some() {
                            return Err(ctx(
                                "clear_below_bytes goes with above_bytes; use clear_below_percent".into()
                            ));
                        }
                        let above = percent("above_percent", r.above_percent, None)?;
                        let clear = percent("clear_below_percent", r.clear_below_percent, Some(above))?;
                        if clear > above {
                            return Err(ctx(format!(
                                "clear_below_percent ({clear}) must not be above above_percent ({above})"
                            )));
                        }
                        (Level::Percent(above), Level::Percent(clear))
                    }
                    (None, Some(above)) => {
                        if r.clear_below_percent.is_some() {
                            return Err(ctx(
                                "clear_below_percent goes with above_percent; use clear_below_bytes".into(),
                            ));
                        }
                        let clear = r.clear_below_bytes.unwrap_or(above);
                        if clear > above {
                            return Err(ctx(format!(
                                "clear_below_bytes ({clear}) must not be above above_bytes ({above})"
                            )));
                        }
                        (Level::Bytes(above), Level::Bytes(clear))
                    }
                };
                Condition::Threshold {
                    category,
                    above,
                    clear_below,
                }
            }
            "forecast" => Condition::Forecast {
                category,
                within_s: seconds("within_s", r.within_s, 3600, 1)?,
                window_s: seconds("window_s", r.window_s, 600, 10)?,
                min_r2: r2(r.min_r2, ttmem_history::forecast::MIN_R2)?,
            },
            "fragmentation" => Condition::Fragmentation {
                category,
                largest_free_below_percent: percent(
                    "largest_free_below_percent",
                    r.largest_free_below_percent,
                    Some(10.0),
                )?,
                free_above_percent: percent("free_above_percent", r.free_above_percent, Some(25.0))?,
            },
            "left_behind" => Condition::LeftBehind {
                min_bytes: r.min_bytes.unwrap_or(1).max(1),
            },
            "leak_suspect" => Condition::LeakSuspect {
                window_s: seconds("window_s", r.window_s, 600, 10)?,
                min_growth_bytes: r.min_growth_bytes.unwrap_or(64 << 20).max(1),
                min_r2: r2(r.min_r2, 0.9)?,
            },
            "event_loss" => Condition::EventLoss {
                quiet_s: seconds("quiet_s", r.quiet_s, 60, 1)?,
            },
            other => {
                return Err(ctx(format!(
                    "unknown kind {other:?}; use threshold, forecast, fragmentation, left_behind, leak_suspect or event_loss"
                )));
            }
        };
        // A field of another kind is a mistake the user wants to hear about.
        let allowed: &[&str] = match &condition {
            Condition::Threshold { .. } => &[
                "category",
                "above_percent",
                "clear_below_percent",
                "above_bytes",
                "clear_below_bytes",
            ],
            Condition::Forecast { .. } => &["category", "within_s", "window_s", "min_r2"],
            Condition::Fragmentation { .. } => &["category", "largest_free_below_percent", "free_above_percent"],
            Condition::LeftBehind { .. } => &["min_bytes"],
            Condition::LeakSuspect { .. } => &["window_s", "min_growth_bytes", "min_r2"],
            Condition::EventLoss { .. } => &["quiet_s"],
        };
        let given = [
            ("category", r.category.is_some()),
            ("above_percent", r.above_percent.is_some()),
            ("clear_below_percent", r.clear_below_percent.is_some()),
            ("above_bytes", r.above_bytes.is_some()),
            ("clear_below_bytes", r.clear_below_bytes.is_some()),
            ("within_s", r.within_s.is_some()),
            ("window_s", r.window_s.is_some()),
            ("min_r2", r.min_r2.is_some()),
            ("largest_free_below_percent", r.largest_free_below_percent.is_some()),
            ("free_above_percent", r.free_above_percent.is_some()),
            ("min_bytes", r.min_bytes.is_some()),
            ("min_growth_bytes", r.min_growth_bytes.is_some()),
            ("quiet_s", r.quiet_s.is_some()),
        ];
        if let Some((field, _)) = given.iter().find(|(f, g)| *g && !allowed.contains(f)) {
            return Err(ctx(format!(
                "{field} does not apply to this kind (it takes {})",
                allowed.join(", ")
            )));
        }
        let for_s = seconds("for_s", r.for_s, 0, 0)?;
        Ok(Rule {
            name: name.clone(),
            severity: r.severity.unwrap_or_default(),
            for_s,
            condition,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    struct File {
        rules: Vec<Rule>,
    }

    fn parse(text: &str) -> Result<Vec<Rule>, String> {
        toml::from_str::<File>(text).map(|f| f.rules).map_err(|e| e.to_string())
    }

    #[test]
    fn every_kind_reads_with_its_defaults() {
        let rules = parse(
            r#"
[[rules]]
name = "hot"
kind = "threshold"
category = "DRAM"
above_percent = 80
clear_below_percent = 75
for_s = 30
severity = "critical"

[[rules]]
name = "soon"
kind = "forecast"

[[rules]]
name = "frag"
kind = "fragmentation"

[[rules]]
name = "left"
kind = "left_behind"

[[rules]]
name = "leak"
kind = "leak_suspect"

[[rules]]
name = "loss"
kind = "event_loss"
"#,
        )
        .unwrap();
        assert_eq!(rules.len(), 6);
        assert_eq!(
            rules[0],
            Rule {
                name: "hot".into(),
                severity: Severity::Critical,
                for_s: 30,
                condition: Condition::Threshold {
                    category: Some("DRAM".into()),
                    above: Level::Percent(80.0),
                    clear_below: Level::Percent(75.0)
                }
            }
        );
        assert_eq!(
            rules[1].condition,
            Condition::Forecast {
                category: None,
                within_s: 3600,
                window_s: 600,
                min_r2: 0.8
            }
        );
        assert_eq!(rules[5].condition, Condition::EventLoss { quiet_s: 60 });
        assert!(check_rules(&rules).is_ok());
        assert!(check_rules(&default_rules()).is_ok());
    }

    #[test]
    fn a_bad_rule_is_an_error_that_names_it_and_its_line() {
        let cases = [
            ("kind = \"threshold\"", "needs above_percent"),
            ("kind = \"threshold\"\nabove_percent = 80\nabove_bytes = 5", "not both"),
            (
                "kind = \"threshold\"\nabove_bytes = 5\nclear_below_bytes = 9",
                "must not be above above_bytes",
            ),
            ("kind = \"threshold\"\nabove_percent = 120", "is not a percentage"),
            (
                "kind = \"threshold\"\nabove_percent = 80\nclear_below_percent = 90",
                "must not be above above_percent",
            ),
            ("kind = \"forecast\"\nwindow_s = 2", "window_s = 2 must be 10"),
            ("kind = \"forecast\"\nmin_r2 = 2.0", "min_r2 = 2 must be 0 to 1"),
            (
                "kind = \"left_behind\"\nabove_percent = 3",
                "above_percent does not apply",
            ),
            ("kind = \"nonsense\"", "unknown kind \"nonsense\""),
            (
                "kind = \"threshold\"\nabove_percent = 80\nbogus = 1",
                "unknown field `bogus`",
            ),
            ("kind = \"event_loss\"\nseverity = \"dire\"", "unknown variant `dire`"),
        ];
        for (body, want) in cases {
            let text = format!("# a comment\n\n[[rules]]\nname = \"r1\"\n{body}\n");
            let err = parse(&text).unwrap_err();
            assert!(err.contains(want), "{body}: {err}");
            assert!(
                err.contains("line 3")
                    || err.contains("line 4")
                    || err.contains("line 5")
                    || err.contains("line 6")
                    || err.contains("line 7"),
                "{body}: names no line: {err}"
            );
        }
        let twice =
            parse("[[rules]]\nname = \"a\"\nkind = \"event_loss\"\n[[rules]]\nname = \"a\"\nkind = \"event_loss\"\n")
                .unwrap();
        assert!(
            check_rules(&twice)
                .unwrap_err()
                .contains("two alert rules are named \"a\"")
        );
        assert!(
            parse("[[rules]]\nname = \"\"\nkind = \"event_loss\"\n")
                .unwrap_err()
                .contains("1 to 128")
        );
    }
}
