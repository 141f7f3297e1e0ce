//! The audit: every command's progress (written by the store sink) and entries that are not a
//! command (emergency steps, external entries from `POST /api/access-control/audit`).

use super::Store;
use crate::error::Result;
use chrono::{DateTime, Utc};
use rusqlite::params;

/// An audit entry that is not a command's progress.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditNote {
    /// Who: `rest:<account>`, `gatehouse:expiry`.
    pub requester: String,
    /// What was done (`emergency_lockdown`, or an external entry's own word).
    pub action: String,
    /// `success`, `failed`, … (an external entry's own word).
    pub status: String,
    pub target: Option<String>,
    pub reason: Option<String>,
    /// Where it came from: `rest`, `expiry`, or an external entry's own word.
    pub source: String,
    pub property_id: Option<String>,
}

/// One audit row as stored. Command rows have `command` (JSON of the command) and no
/// `action`; notes have `action` and an empty `command`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub seq: i64,
    pub request_id: String,
    pub requester: String,
    pub command: String,
    pub status: String,
    pub detail: String,
    pub at: String,
    pub action: Option<String>,
    pub target: Option<String>,
    pub reason: Option<String>,
    pub source: Option<String>,
    pub property_id: Option<String>,
}

/// Rows of no property (commands) belong to every property: one site.
const OF_PROPERTY: &str = "(?1 IS NULL OR property_id IS NULL OR property_id = ?1)";

impl Store {
    /// Store a note; its `seq`.
    pub fn audit_note(&self, n: &AuditNote, at: DateTime<Utc>) -> Result<i64> {
        self.with(|c| {
            c.execute(
                "INSERT INTO audit (request_id, requester, command, status, detail, at, action, target, reason, source, property_id)
                 VALUES (?1, ?2, '', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    format!("note-{}", at.timestamp_millis()),
                    n.requester,
                    n.status,
                    n.reason.clone().unwrap_or_default(),
                    at.to_rfc3339(),
                    n.action,
                    n.target,
                    n.reason,
                    n.source,
                    n.property_id,
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Newest first: `limit` rows after skipping `offset`, and how many there are.
    pub fn audit_page(
        &self,
        property: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<AuditRow>, i64)> {
        self.with(|c| {
            let total: i64 = c
                .prepare_cached(&format!("SELECT count(*) FROM audit WHERE {OF_PROPERTY}"))?
                .query_row(params![property], |r| r.get(0))?;
            let mut st = c.prepare_cached(&format!(
                "SELECT seq, request_id, requester, command, status, detail, at, action, target, reason, source, property_id
                 FROM audit WHERE {OF_PROPERTY} ORDER BY seq DESC LIMIT ?2 OFFSET ?3"
            ))?;
            let rows = st
                .query_map(params![property, limit, offset], |r| {
                    Ok(AuditRow {
                        seq: r.get(0)?,
                        request_id: r.get(1)?,
                        requester: r.get(2)?,
                        command: r.get(3)?,
                        status: r.get(4)?,
                        detail: r.get(5)?,
                        at: r.get(6)?,
                        action: r.get(7)?,
                        target: r.get(8)?,
                        reason: r.get(9)?,
                        source: r.get(10)?,
                        property_id: r.get(11)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((rows, total))
        })
    }

    /// Net2 command round trips: the mean time from `accepted` (the command was planned and
    /// handed to the Net2 client) to `sent` (Net2 answered) over the last `n` commands sent,
    /// in ms, and how many were measured. `None` when no command was sent yet.
    pub fn command_round_trip(&self, n: i64) -> Result<Option<(f64, i64)>> {
        self.with(|c| {
            let (avg, count): (Option<f64>, i64) = c
                .prepare_cached(
                    "SELECT avg(ms), count(*) FROM (
                        SELECT (julianday(s.at) - julianday(a.at)) * 86400000.0 AS ms
                        FROM audit s JOIN audit a ON a.request_id = s.request_id AND a.status = 'accepted'
                        WHERE s.status = 'sent' ORDER BY s.seq DESC LIMIT ?1)",
                )?
                .query_row([n], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(avg.map(|a| (a, count)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CommandKind, CommandStatus, CommandUpdate};
    use crate::storage::Write;

    #[test]
    fn notes_and_commands_page_newest_first_and_round_trips_are_measured() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.db")).unwrap();
        let t0 = DateTime::parse_from_rfc3339("2026-01-26T10:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(s.command_round_trip(100).unwrap(), None);
        let up = |status, ms: i64| {
            Write::Audit(CommandUpdate {
                request_id: "r1".into(),
                requester: "rest:ada".into(),
                kind: CommandKind::Lockdown { active: true },
                status,
                detail: "x".into(),
                at: t0 + chrono::Duration::milliseconds(ms),
            })
        };
        s.write_batch(&[up(CommandStatus::Accepted, 0), up(CommandStatus::Sent, 45)])
            .unwrap();
        let note = |p: Option<&str>| AuditNote {
            requester: "rest:ada".into(),
            action: "emergency_lockdown".into(),
            status: "success".into(),
            target: Some("property:main".into()),
            reason: Some("threat".into()),
            source: "rest".into(),
            property_id: p.map(str::to_owned),
        };
        s.audit_note(&note(Some("main")), t0).unwrap();
        s.audit_note(&note(Some("other")), t0).unwrap();
        let (rows, total) = s.audit_page(None, 10, 0).unwrap();
        assert_eq!(total, 4);
        assert_eq!(rows[0].property_id.as_deref(), Some("other"));
        assert_eq!(rows[3].status, "accepted");
        // Commands belong to every property; notes to theirs.
        let (rows, total) = s.audit_page(Some("main"), 2, 0).unwrap();
        assert_eq!(total, 3);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].action.as_deref(), Some("emergency_lockdown"));
        let (rt, n) = s.command_round_trip(100).unwrap().unwrap();
        assert_eq!(n, 1);
        assert!((rt - 45.0).abs() < 1.0, "{rt}");
    }
}
