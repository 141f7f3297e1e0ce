//! Seed 001's metrics (`GET /api/access-control/metrics`) and report export
//! (`GET /api/access-control/reports/export?format=csv|pdf`), computed from the store and the
//! Net2 directory. "Today" is this machine's local day.
//!
//! - `totalAccessPoints`: the doors of Net2's door list; `activeAccessPoints`: those not
//!   `disabled` in the config whose ACU Net2 has not reported offline.
//! - `totalUsers`: Net2's users; `activeUsers`: those within their Net2 validity dates (or
//!   with none) that have an access event (granted, denied or timeout) in the last 30 days.
//! - `todayAccessEvents` / `deniedAccessEvents`: access events (granted, denied, timeout) /
//!   denials since local midnight.
//! - `securityScore`: [`security_score`].
//! - `averageResponseTime`: the mean Net2 command round trip (from a command's `accepted` to
//!   Net2's answer, `sent`) over the last 100 commands sent, from the audit; `null` when none
//!   was sent yet.

use super::{Detail, Web, detail};
use crate::config::DoorMode;
use crate::storage::report::{Counts, DoorCounts};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Local, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

const DAY_MS: i64 = 86_400_000;
/// A report covers at most this many days.
const MAX_REPORT_DAYS: i64 = 366;

/// The seed's metrics.
#[derive(Serialize, Deserialize, utoipa::ToSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(super) struct Metrics {
    pub total_access_points: u64,
    pub active_access_points: u64,
    pub total_users: u64,
    pub active_users: u64,
    pub today_access_events: u64,
    pub denied_access_events: u64,
    /// 0 to 100 (see the README).
    pub security_score: u32,
    /// `"45ms"`; `null` when no Net2 command was measured yet.
    pub average_response_time: Option<String>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(super) struct MetricsAnswer {
    data: Metrics,
}

/// What the security score is made of (today's).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ScoreInputs {
    pub access: u64,
    pub denied: u64,
    pub forced: u64,
    pub held_open: u64,
    pub doors: u64,
    pub doors_offline: u64,
}

/// 100 minus penalties, rounded, never below 0:
/// - denials: 30 × denied / access events today (0 without events);
/// - doors forced today: 10 each, at most 30;
/// - doors held open today: 5 each, at most 20;
/// - doors whose ACU is offline now: 20 × offline / doors (0 without doors).
pub(crate) fn security_score(i: ScoreInputs) -> u32 {
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let penalty = 30.0 * ratio(i.denied, i.access)
        + (10 * i.forced).min(30) as f64
        + (5 * i.held_open).min(20) as f64
        + 20.0 * ratio(i.doors_offline, i.doors);
    (100.0 - penalty).round().clamp(0.0, 100.0) as u32
}

/// Local midnight of `day` (the earlier one on a DST change; 00:00 missing: an hour later).
fn local_midnight(day: NaiveDate) -> DateTime<Utc> {
    let naive = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    Local
        .from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            Local
                .from_local_datetime(&(naive + chrono::Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| naive.and_utc())
}

fn internal(e: crate::error::Error) -> Response {
    tracing::error!(error = %e, "unable to compute metrics");
    detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
}

async fn compute(w: &Web, now: DateTime<Utc>) -> crate::error::Result<Metrics> {
    let cfg = w.config();
    let doors = w.directory.doors();
    let disabled = |id: u64| {
        cfg.doors
            .get(&id)
            .is_some_and(|d| d.mode == DoorMode::Disabled)
    };
    let offline = doors.iter().filter(|d| d.online == Some(false)).count() as u64;
    let active_points = doors
        .iter()
        .filter(|d| !disabled(d.id) && d.online != Some(false))
        .count() as u64;
    let users = w.directory.users();
    let today = local_midnight(now.with_timezone(&Local).date_naive()).timestamp_millis();
    let now_ms = now.timestamp_millis();
    let month_ago = now_ms - 30 * DAY_MS;
    let (counts, (forced, held), recent, rt) = w
        .store
        .run(move |s| {
            Ok((
                s.access_counts(today, now_ms + 1)?,
                s.door_alarms(today, now_ms + 1)?,
                s.access_users(month_ago)?,
                s.command_round_trip(100)?,
            ))
        })
        .await?;
    let recent: std::collections::HashSet<i64> = recent.into_iter().collect();
    let active_users = users
        .iter()
        .filter(|u| u.active != Some(false) && recent.contains(&u.id))
        .count() as u64;
    Ok(Metrics {
        total_access_points: doors.len() as u64,
        active_access_points: active_points,
        total_users: users.len() as u64,
        active_users,
        today_access_events: counts.total(),
        denied_access_events: counts.denied,
        security_score: security_score(ScoreInputs {
            access: counts.total(),
            denied: counts.denied,
            forced,
            held_open: held,
            doors: doors.len() as u64,
            doors_offline: offline,
        }),
        average_response_time: rt.map(|(ms, _)| format!("{}ms", ms.round().max(0.0) as u64)),
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct MetricsQuery {
    /// The property (one site: every door and user belong to it).
    #[allow(dead_code)]
    property_id: Option<String>,
}

/// Access metrics now (viewer).
#[utoipa::path(get, path = "/api/access-control/metrics", tag = "metrics", params(MetricsQuery),
    responses((status = 200, body = MetricsAnswer), (status = 400, body = Detail),
        (status = 401, body = Detail)))]
pub(super) async fn metrics(State(w): State<Web>, Query(_q): Query<MetricsQuery>) -> Response {
    match compute(&w, w.emergency.now()).await {
        Ok(m) => axum::Json(MetricsAnswer { data: m }).into_response(),
        Err(e) => internal(e),
    }
}

// --------------------------------------------------------------------------------- report

/// One door's line of a report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DoorLine {
    pub id: Option<u64>,
    pub name: String,
    pub counts: Counts,
}

/// Everything a report shows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Report {
    pub generated: DateTime<Utc>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub metrics: Metrics,
    pub doors: Vec<DoorLine>,
    pub days: Vec<(NaiveDate, Counts)>,
    pub total: Counts,
}

/// Days of `[start, end)` in local time, each clipped to the period.
fn days_of(start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<(NaiveDate, i64, i64)> {
    let mut out = Vec::new();
    let mut day = start.with_timezone(&Local).date_naive();
    let last = end.with_timezone(&Local).date_naive();
    while day <= last && out.len() as i64 <= MAX_REPORT_DAYS + 1 {
        let Some(next) = day.succ_opt() else { break };
        let a = local_midnight(day).max(start).timestamp_millis();
        let b = local_midnight(next).min(end).timestamp_millis();
        if a < b {
            out.push((day, a, b));
        }
        day = next;
    }
    out
}

/// Door lines: every door of Net2's list (zeros included) and every door with events, named
/// by the config, Net2, or the events.
fn door_lines(w: &Web, counted: Vec<DoorCounts>) -> Vec<DoorLine> {
    let cfg = w.config();
    let mut lines: std::collections::BTreeMap<Option<u64>, DoorLine> = w
        .directory
        .doors()
        .into_iter()
        .map(|d| {
            (
                Some(d.id),
                DoorLine {
                    id: Some(d.id),
                    name: d.name.unwrap_or_default(),
                    counts: Counts::default(),
                },
            )
        })
        .collect();
    for c in counted {
        let id = c.door_id.and_then(|d| u64::try_from(d).ok());
        let line = lines.entry(id).or_insert_with(|| DoorLine {
            id,
            name: String::new(),
            counts: Counts::default(),
        });
        line.counts = c.counts;
        if line.name.is_empty() {
            line.name = c.door_name.unwrap_or_default();
        }
    }
    for l in lines.values_mut() {
        if let Some(n) =
            l.id.and_then(|id| cfg.doors.get(&id))
                .and_then(|d| d.name.clone())
        {
            l.name = n;
        }
        if l.name.is_empty() {
            l.name = match l.id {
                Some(id) => format!("door {id}"),
                None => "(no door)".into(),
            };
        }
    }
    lines.into_values().collect()
}

async fn build(w: &Web, start: DateTime<Utc>, end: DateTime<Utc>) -> crate::error::Result<Report> {
    let now = w.emergency.now();
    let metrics = compute(w, now).await?;
    let days = days_of(start, end);
    let periods: Vec<(i64, i64)> = days.iter().map(|(_, a, b)| (*a, *b)).collect();
    let (a, b) = (start.timestamp_millis(), end.timestamp_millis());
    let (per_day, per_door, total) = w
        .store
        .run(move |s| {
            Ok((
                s.access_counts_each(&periods)?,
                s.access_by_door(a, b)?,
                s.access_counts(a, b)?,
            ))
        })
        .await?;
    Ok(Report {
        generated: now,
        start,
        end,
        metrics,
        doors: door_lines(w, per_door),
        days: days.iter().map(|(d, ..)| *d).zip(per_day).collect(),
        total,
    })
}

fn local(t: DateTime<Utc>) -> String {
    t.with_timezone(&Local)
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

/// A CSV field: quoted when it must be (RFC 4180), and a text a spreadsheet would run as a
/// formula (`=`, `+`, `-`, `@`, tab, CR first) gets a `'` in front — door names are typed by
/// whoever administers Net2, and the report is opened by someone else.
fn csv_text(out: &mut String, s: &str) {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = formula || s.contains([',', '"', '\r', '\n']);
    if quote {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    out.push_str(&s.replace('"', "\"\""));
    if quote {
        out.push('"');
    }
}

fn metric_rows(m: &Metrics) -> Vec<(&'static str, String)> {
    vec![
        ("totalAccessPoints", m.total_access_points.to_string()),
        ("activeAccessPoints", m.active_access_points.to_string()),
        ("totalUsers", m.total_users.to_string()),
        ("activeUsers", m.active_users.to_string()),
        ("todayAccessEvents", m.today_access_events.to_string()),
        ("deniedAccessEvents", m.denied_access_events.to_string()),
        ("securityScore", m.security_score.to_string()),
        (
            "averageResponseTime",
            m.average_response_time.clone().unwrap_or_default(),
        ),
    ]
}

/// The report as CSV: sections separated by an empty line, each with its header row.
pub(crate) fn csv(r: &Report) -> String {
    let mut o = String::new();
    o.push_str("report,period_start,period_end,generated\r\n");
    let _ = write!(
        o,
        "gatehouse access report,{},{},{}\r\n\r\n",
        r.start.to_rfc3339(),
        r.end.to_rfc3339(),
        r.generated.to_rfc3339()
    );
    o.push_str("metric,value\r\n");
    for (k, v) in metric_rows(&r.metrics) {
        let _ = write!(o, "{k},{v}\r\n");
    }
    o.push_str("\r\ndoor_id,door,granted,denied,timeout,total\r\n");
    for d in &r.doors {
        if let Some(id) = d.id {
            let _ = write!(o, "{id}");
        }
        o.push(',');
        csv_text(&mut o, &d.name);
        let c = d.counts;
        let _ = write!(
            o,
            ",{},{},{},{}\r\n",
            c.granted,
            c.denied,
            c.timeout,
            c.total()
        );
    }
    o.push_str("\r\ndate,granted,denied,timeout,total\r\n");
    for (day, c) in &r.days {
        let _ = write!(
            o,
            "{day},{},{},{},{}\r\n",
            c.granted,
            c.denied,
            c.timeout,
            c.total()
        );
    }
    let t = r.total;
    let _ = write!(
        o,
        "total,{},{},{},{}\r\n",
        t.granted,
        t.denied,
        t.timeout,
        t.total()
    );
    o
}

/// Text in PDF's WinAnsiEncoding (the standard fonts' own): Latin-1 letters as themselves,
/// anything else `?`.
fn win_ansi(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| match c as u32 {
            0x20..=0x7e | 0xa0..=0xff => c as u32 as u8,
            0x20ac => 0x80,
            0x2013 => 0x96,
            0x2014 => 0x97,
            _ => b'?',
        })
        .collect()
}

/// The report as a PDF: A4 pages of text in the standard Helvetica (nothing embedded).
pub(crate) fn pdf(r: &Report) -> Vec<u8> {
    use pdf_writer::{Content, Name, Pdf, Rect, Ref, Str};
    // (size, bold, columns at x positions)
    type Line = (f32, bool, Vec<(f32, String)>);
    let mut lines: Vec<Line> = Vec::new();
    let text = |size, bold, s: String| (size, bold, vec![(0.0, s)]);
    lines.push(text(18.0, true, "gatehouse access report".into()));
    lines.push(text(
        10.0,
        false,
        format!("Period: {} to {}", local(r.start), local(r.end)),
    ));
    lines.push(text(
        10.0,
        false,
        format!("Generated: {}", local(r.generated)),
    ));
    lines.push(text(10.0, false, String::new()));
    lines.push(text(13.0, true, "Metrics (now)".into()));
    for (k, v) in metric_rows(&r.metrics) {
        lines.push((10.0, false, vec![(0.0, k.into()), (200.0, v)]));
    }
    lines.push(text(10.0, false, String::new()));
    let cols = [0.0, 250.0, 310.0, 370.0, 430.0];
    let row = |bold, cells: [String; 5]| -> Line {
        (
            10.0,
            bold,
            cols.iter().copied().zip(cells).collect::<Vec<_>>(),
        )
    };
    lines.push(text(13.0, true, "Access events by door".into()));
    lines.push(row(
        true,
        [
            "Door".into(),
            "Granted".into(),
            "Denied".into(),
            "Timeout".into(),
            "Total".into(),
        ],
    ));
    for d in &r.doors {
        let c = d.counts;
        lines.push(row(
            false,
            [
                d.name.clone(),
                c.granted.to_string(),
                c.denied.to_string(),
                c.timeout.to_string(),
                c.total().to_string(),
            ],
        ));
    }
    lines.push(text(10.0, false, String::new()));
    lines.push(text(13.0, true, "Access events by day".into()));
    lines.push(row(
        true,
        [
            "Day".into(),
            "Granted".into(),
            "Denied".into(),
            "Timeout".into(),
            "Total".into(),
        ],
    ));
    for (day, c) in &r.days {
        lines.push(row(
            false,
            [
                day.to_string(),
                c.granted.to_string(),
                c.denied.to_string(),
                c.timeout.to_string(),
                c.total().to_string(),
            ],
        ));
    }
    let t = r.total;
    lines.push(row(
        true,
        [
            "Total".into(),
            t.granted.to_string(),
            t.denied.to_string(),
            t.timeout.to_string(),
            t.total().to_string(),
        ],
    ));

    // Pages of A4, 50 pt margins.
    let (width, height, margin) = (595.0f32, 842.0f32, 50.0f32);
    let mut pages: Vec<Vec<(f32, Line)>> = vec![Vec::new()];
    let mut y = height - margin;
    for l in lines {
        let step = l.0 * 1.5;
        if y - step < margin {
            pages.push(Vec::new());
            y = height - margin;
        }
        y -= step;
        if let Some(p) = pages.last_mut() {
            p.push((y, l));
        }
    }
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let regular = Ref::new(3);
    let bold = Ref::new(4);
    let info = Ref::new(5);
    let ids: Vec<(Ref, Ref)> = (0..pages.len() as i32)
        .map(|i| (Ref::new(6 + 2 * i), Ref::new(7 + 2 * i)))
        .collect();
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(ids.iter().map(|(p, _)| *p))
        .count(ids.len() as i32);
    pdf.document_info(info)
        .title(pdf_writer::TextStr("gatehouse access report"))
        .producer(pdf_writer::TextStr("gatehouse"));
    for (lines, (page_id, content_id)) in pages.iter().zip(&ids) {
        let mut page = pdf.page(*page_id);
        page.parent(tree)
            .media_box(Rect::new(0.0, 0.0, width, height))
            .contents(*content_id);
        page.resources()
            .fonts()
            .pair(Name(b"F1"), regular)
            .pair(Name(b"F2"), bold);
        drop(page);
        let mut c = Content::new();
        for (y, (size, b, cells)) in lines {
            for (x, s) in cells {
                if s.is_empty() {
                    continue;
                }
                c.begin_text();
                c.set_font(Name(if *b { b"F2" } else { b"F1" }), *size);
                c.next_line(margin + x, *y);
                c.show(Str(&win_ansi(s)));
                c.end_text();
            }
        }
        pdf.stream(*content_id, &c.finish());
    }
    for (id, name) in [(regular, &b"Helvetica"[..]), (bold, b"Helvetica-Bold")] {
        pdf.type1_font(id)
            .base_font(Name(name))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    pdf.finish()
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ExportQuery {
    /// `csv` (default) or `pdf`.
    format: Option<String>,
    /// First day (`2026-01-20`, local) or moment (RFC 3339); default 7 days before `endDate`.
    #[serde(rename = "startDate")]
    #[param(rename = "startDate")]
    start_date: Option<String>,
    /// Last day, included (`2026-01-26`, local) or moment (RFC 3339, excluded); default now.
    #[serde(rename = "endDate")]
    #[param(rename = "endDate")]
    end_date: Option<String>,
    /// The property (one site: every door belongs to it).
    #[allow(dead_code)]
    property_id: Option<String>,
}

/// A date (`2026-01-26`: local midnight, or the next one for an end) or an RFC 3339 moment.
pub(super) fn parse_when(s: &str, end: bool) -> Result<DateTime<Utc>, String> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let d = if end { d.succ_opt().unwrap_or(d) } else { d };
        return Ok(local_midnight(d));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{s:?} is not a date (2026-01-26) or an RFC 3339 time"))
}

/// The period `[start, end)` of a query, checked.
fn period(q: &ExportQuery, now: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>), String> {
    let end = match &q.end_date {
        Some(s) => parse_when(s, true).map_err(|e| format!("endDate: {e}"))?,
        None => now,
    };
    let start = match &q.start_date {
        Some(s) => parse_when(s, false).map_err(|e| format!("startDate: {e}"))?,
        None => end - chrono::Duration::days(7),
    };
    if start >= end {
        return Err("startDate must be before endDate".into());
    }
    if end - start > chrono::Duration::days(MAX_REPORT_DAYS) {
        return Err(format!("a report covers at most {MAX_REPORT_DAYS} days"));
    }
    Ok((start, end))
}

/// A report of the metrics and the access events by door and by day for a period, as CSV or
/// PDF (viewer).
#[utoipa::path(get, path = "/api/access-control/reports/export", tag = "metrics",
    params(ExportQuery),
    responses(
        (status = 200, description = "the report", content(
            (String = "text/csv"),
            (Vec<u8> = "application/pdf"))),
        (status = 400, body = Detail), (status = 401, body = Detail)))]
pub(super) async fn export(State(w): State<Web>, Query(q): Query<ExportQuery>) -> Response {
    let format = q.format.as_deref().unwrap_or("csv");
    if format != "csv" && format != "pdf" {
        return detail(
            StatusCode::BAD_REQUEST,
            format!("format must be csv or pdf, not {format:?}"),
        );
    }
    let (start, end) = match period(&q, w.emergency.now()) {
        Ok(p) => p,
        Err(why) => return detail(StatusCode::BAD_REQUEST, why),
    };
    let report = match build(&w, start, end).await {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    let stamp = report
        .generated
        .with_timezone(&Local)
        .format("%Y%m%d-%H%M%S");
    let (body, ctype) = if format == "pdf" {
        (pdf(&report), "application/pdf")
    } else {
        (csv(&report).into_bytes(), "text/csv; charset=utf-8")
    };
    let disposition = format!("attachment; filename=\"gatehouse-report-{stamp}.{format}\"");
    let mut res = body.into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_score_is_100_minus_documented_penalties() {
        let s = |access, denied, forced, held_open, doors, doors_offline| {
            security_score(ScoreInputs {
                access,
                denied,
                forced,
                held_open,
                doors,
                doors_offline,
            })
        };
        assert_eq!(s(0, 0, 0, 0, 0, 0), 100, "nothing happened, no doors");
        assert_eq!(s(100, 10, 0, 0, 7, 0), 97, "30 × 10 %");
        assert_eq!(s(4, 4, 0, 0, 7, 0), 70, "every access denied");
        assert_eq!(s(10, 0, 1, 1, 7, 0), 85, "one forced, one held open");
        assert_eq!(s(10, 0, 9, 9, 7, 0), 50, "capped at 30 and 20");
        assert_eq!(s(10, 0, 0, 0, 4, 1), 95, "a quarter of the doors offline");
        assert_eq!(s(1, 1, 9, 9, 1, 1), 0, "everything wrong");
    }

    fn sample() -> Report {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        Report {
            generated: t("2026-01-26T10:00:00Z"),
            start: t("2026-01-19T10:00:00Z"),
            end: t("2026-01-26T10:00:00Z"),
            metrics: Metrics {
                total_access_points: 2,
                active_access_points: 2,
                total_users: 3,
                active_users: 1,
                today_access_events: 4,
                denied_access_events: 1,
                security_score: 93,
                average_response_time: Some("45ms".into()),
            },
            doors: vec![
                DoorLine {
                    id: Some(6612642),
                    name: "Fordør - ACU 6612642".into(),
                    counts: Counts {
                        granted: 3,
                        denied: 1,
                        timeout: 0,
                    },
                },
                DoorLine {
                    id: Some(1),
                    name: "=HYPERLINK(\"http://x\",\"y\")".into(),
                    counts: Counts::default(),
                },
            ],
            days: vec![(
                NaiveDate::from_ymd_opt(2026, 1, 26).unwrap(),
                Counts {
                    granted: 3,
                    denied: 1,
                    timeout: 0,
                },
            )],
            total: Counts {
                granted: 3,
                denied: 1,
                timeout: 0,
            },
        }
    }

    #[test]
    fn csv_has_every_section_and_no_formula() {
        let c = csv(&sample());
        assert!(c.contains("\r\nsecurityScore,93\r\n"), "{c}");
        assert!(
            c.contains("\r\n6612642,Fordør - ACU 6612642,3,1,0,4\r\n"),
            "{c}"
        );
        assert!(
            c.contains("\r\n1,\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",0,0,0,0\r\n"),
            "a formula is text: {c}"
        );
        assert!(c.contains("\r\n2026-01-26,3,1,0,4\r\n"));
        assert!(c.ends_with("total,3,1,0,4\r\n"));
    }

    #[test]
    fn pdf_is_a_pdf_with_latin_names() {
        let p = pdf(&sample());
        assert!(p.starts_with(b"%PDF-"));
        assert!(p.ends_with(b"%%EOF") || p.ends_with(b"%%EOF\n"));
        let has = |s: &[u8]| p.windows(s.len()).any(|w| w == s);
        assert!(has(b"/Helvetica-Bold") && has(b"/WinAnsiEncoding"));
        // The text itself is read back by tests/access_ops.rs (pdftotext).
        assert_eq!(win_ansi("a€ø漢"), b"a\x80\xf8?");
    }

    #[test]
    fn periods_are_checked_and_days_cut_locally() {
        let now = DateTime::parse_from_rfc3339("2026-01-26T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let q = |s: Option<&str>, e: Option<&str>| ExportQuery {
            format: None,
            start_date: s.map(str::to_owned),
            end_date: e.map(str::to_owned),
            property_id: None,
        };
        let (a, b) = period(&q(None, None), now).unwrap();
        assert_eq!((b - a).num_days(), 7);
        assert_eq!(b, now);
        let (a, b) = period(&q(Some("2026-01-20"), Some("2026-01-26")), now).unwrap();
        assert_eq!(
            a,
            local_midnight(NaiveDate::from_ymd_opt(2026, 1, 20).unwrap())
        );
        assert_eq!(
            b,
            local_midnight(NaiveDate::from_ymd_opt(2026, 1, 27).unwrap())
        );
        assert_eq!(days_of(a, b).len(), 7, "both days included");
        assert!(period(&q(Some("2026-01-27"), Some("2026-01-26")), now).is_err());
        assert!(period(&q(Some("yesterday"), None), now).is_err());
        assert!(period(&q(Some("2020-01-01"), Some("2026-01-26")), now).is_err());
        assert!(period(&q(Some("2026-01-26T08:00:00Z"), None), now).is_ok());
    }
}
