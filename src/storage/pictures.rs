//! Pictures saved on disk, indexed here; retention deletes the row and the file together.

use super::Store;
use crate::error::Result;
use rusqlite::{OptionalExtension, params};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq)]
pub struct PictureRow {
    pub id: String,
    pub camera: String,
    pub channel: u32,
    pub taken: chrono::DateTime<chrono::Utc>,
    /// `picture` (the camera's JPEG), `live` (decoded from a running stream), `rtsp` (a
    /// session opened for it).
    pub source: String,
    /// `mqtt`, `rest`, `door_event`, `alarm`.
    pub trigger: String,
    pub event_id: Option<String>,
    pub path: PathBuf,
    pub bytes: u64,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PictureRow> {
    let taken: String = r.get(3)?;
    Ok(PictureRow {
        id: r.get(0)?,
        camera: r.get(1)?,
        channel: r.get(2)?,
        taken: chrono::DateTime::parse_from_rfc3339(&taken)
            .map(|t| t.to_utc())
            .unwrap_or_default(),
        source: r.get(4)?,
        trigger: r.get(5)?,
        event_id: r.get(6)?,
        path: PathBuf::from(r.get::<_, String>(7)?),
        bytes: r.get::<_, i64>(8)? as u64,
    })
}

const COLS: &str = "id, camera, channel, taken, source, trigger, event_id, path, bytes";

impl Store {
    pub fn picture_insert(&self, p: &PictureRow) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO pictures (id, camera, channel, taken_ms, taken, source, trigger, event_id, path, bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    p.id,
                    p.camera,
                    p.channel,
                    p.taken.timestamp_millis(),
                    p.taken.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    p.source,
                    p.trigger,
                    p.event_id,
                    p.path.to_string_lossy(),
                    p.bytes as i64
                ],
            )
            .map(|_| ())
        })
    }

    pub fn picture(&self, id: &str) -> Result<Option<PictureRow>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {COLS} FROM pictures WHERE id = ?1"),
                [id],
                row,
            )
            .optional()
        })
    }

    /// The picture taken for an event (the first, if there were several).
    pub fn picture_for_event(&self, event_id: &str) -> Result<Option<PictureRow>> {
        self.with(|c| {
            c.query_row(
                &format!(
                    "SELECT {COLS} FROM pictures WHERE event_id = ?1 ORDER BY taken_ms LIMIT 1"
                ),
                [event_id],
                row,
            )
            .optional()
        })
    }

    /// Link more events to a saved picture (`picture_id`): a burst's events at one door
    /// share the picture taken for the first (see `media::service`). Each gets its own row,
    /// `<picture_id>-<n>`, showing the same file; retention deletes the file with its last row.
    pub fn picture_link(&self, picture_id: &str, event_ids: &[String]) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare(
                    "INSERT INTO pictures (id, camera, channel, taken_ms, taken, source, trigger, event_id, path, bytes)
                     SELECT ?2, camera, channel, taken_ms, taken, source, trigger, ?3, path, bytes
                     FROM pictures WHERE id = ?1",
                )?;
                for (n, e) in event_ids.iter().enumerate() {
                    st.execute(params![picture_id, format!("{picture_id}-{}", n + 1), e])?;
                }
            }
            tx.commit()
        })
    }

    /// Newest first.
    pub fn pictures_recent(
        &self,
        camera: &str,
        channel: u32,
        limit: u32,
    ) -> Result<Vec<PictureRow>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLS} FROM pictures WHERE camera = ?1 AND channel = ?2 ORDER BY taken_ms DESC LIMIT ?3"
            ))?;
            st.query_map(params![camera, channel, limit], row)?.collect()
        })
    }

    /// Rows past retention: more than `keep_count` for this channel (0 = no limit) or older
    /// than `before_ms` (any channel). They are deleted here; returned are those whose file
    /// no other row shows any more (one picture shared by a burst's events, see
    /// [`Store::picture_link`]), once per file: the caller deletes these files.
    /// Pictures of events and the others (commands, REST, alarms) are counted apart: a
    /// dashboard polling `/snapshot` every few seconds must not push the picture of who came
    /// in at 3 am out of the history.
    pub fn pictures_expire(
        &self,
        camera: &str,
        channel: u32,
        keep_count: u32,
        before_ms: Option<i64>,
    ) -> Result<Vec<PictureRow>> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut gone: Vec<PictureRow> = Vec::new();
            if keep_count > 0 {
                let mut st = tx.prepare(&format!(
                    "SELECT {COLS} FROM pictures WHERE camera = ?1 AND channel = ?2 AND (event_id IS NULL) = ?4 ORDER BY taken_ms DESC LIMIT -1 OFFSET ?3"
                ))?;
                for of_event in [true, false] {
                    gone.extend(
                        st.query_map(params![camera, channel, keep_count, !of_event], row)?
                            .collect::<rusqlite::Result<Vec<_>>>()?,
                    );
                }
            }
            if let Some(b) = before_ms {
                let mut st = tx.prepare(&format!(
                    "SELECT {COLS} FROM pictures WHERE taken_ms < ?1 LIMIT 10000"
                ))?;
                for r in st.query_map([b], row)? {
                    let r = r?;
                    if !gone.iter().any(|g| g.id == r.id) {
                        gone.push(r);
                    }
                }
            }
            for g in &gone {
                tx.execute("DELETE FROM pictures WHERE id = ?1", [&g.id])?;
            }
            let mut files = Vec::with_capacity(gone.len());
            {
                let mut shown =
                    tx.prepare("SELECT EXISTS (SELECT 1 FROM pictures WHERE path = ?1)")?;
                for g in gone {
                    let path = g.path.to_string_lossy().into_owned();
                    if !files.iter().any(|f: &PictureRow| f.path == g.path)
                        && !shown.query_row([&path], |r| r.get::<_, bool>(0))?
                    {
                        files.push(g);
                    }
                }
            }
            tx.commit()?;
            Ok(files)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pic(id: &str, ch: u32, age_s: i64) -> PictureRow {
        PictureRow {
            id: id.into(),
            camera: "garage".into(),
            channel: ch,
            taken: chrono::Utc::now() - chrono::Duration::seconds(age_s),
            source: "picture".into(),
            trigger: "mqtt".into(),
            event_id: (id == "b").then(|| "net2:7".to_string()),
            path: PathBuf::from(format!("/x/{id}.jpg")),
            bytes: 10,
        }
    }

    #[test]
    fn insert_find_and_expire_by_count_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("t.db")).unwrap();
        for (id, ch, age) in [("a", 1, 30), ("b", 1, 20), ("c", 1, 10), ("d", 2, 100_000)] {
            s.picture_insert(&pic(id, ch, age)).unwrap();
        }
        assert_eq!(s.picture_for_event("net2:7").unwrap().unwrap().id, "b");
        assert_eq!(s.picture("c").unwrap().unwrap().channel, 1);
        let recent: Vec<_> = s
            .pictures_recent("garage", 1, 10)
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(recent, ["c", "b", "a"]);
        let day_ago = (chrono::Utc::now() - chrono::Duration::days(1)).timestamp_millis();
        let gone: Vec<_> = s
            .pictures_expire("garage", 1, 1, Some(day_ago))
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(gone, ["a", "d"]);
        assert!(s.picture("a").unwrap().is_none());
        assert!(s.picture("b").unwrap().is_some());
    }

    #[test]
    fn polled_pictures_never_push_an_event_picture_out() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("t.db")).unwrap();
        // The event's picture ("b") is the oldest; then a poller takes three more.
        for (id, age) in [("b", 40), ("p1", 30), ("p2", 20), ("p3", 10)] {
            s.picture_insert(&pic(id, 1, age)).unwrap();
        }
        let gone: Vec<_> = s
            .pictures_expire("garage", 1, 2, None)
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(
            gone,
            ["p1"],
            "the oldest polled picture goes, the event's stays"
        );
        assert!(s.picture_for_event("net2:7").unwrap().is_some());
        // Event pictures have their own count.
        let mut e = pic("b2", 1, 5);
        e.event_id = Some("net2:8".into());
        s.picture_insert(&e).unwrap();
        let mut e = pic("b3", 1, 1);
        e.event_id = Some("net2:9".into());
        s.picture_insert(&e).unwrap();
        let gone: Vec<_> = s
            .pictures_expire("garage", 1, 2, None)
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(gone, ["b"]);
    }

    #[test]
    fn a_shared_picture_is_found_by_each_event_and_its_file_goes_with_the_last_row() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("t.db")).unwrap();
        let mut first = pic("p", 1, 30);
        first.event_id = Some("net2:1".into());
        s.picture_insert(&first).unwrap();
        s.picture_link("p", &["net2:2".into(), "net2:3".into()])
            .unwrap();
        for (e, id) in [("net2:1", "p"), ("net2:2", "p-1"), ("net2:3", "p-2")] {
            let r = s.picture_for_event(e).unwrap().unwrap();
            assert_eq!(
                (r.id.as_str(), r.path.as_path()),
                (id, first.path.as_path())
            );
        }
        // Newer pictures push two of the three rows out: the file is still shown.
        for (id, age) in [("q", 10), ("r", 5)] {
            let mut e = pic(id, 1, age);
            e.event_id = Some(format!("net2:{id}"));
            s.picture_insert(&e).unwrap();
        }
        let gone = s.pictures_expire("garage", 1, 3, None).unwrap();
        assert!(gone.is_empty(), "a file still shown is kept: {gone:?}");
        assert_eq!(
            s.picture_for_event("net2:3").unwrap().unwrap().path,
            first.path
        );
        // Its last row goes: its file goes, once.
        let gone = s.pictures_expire("garage", 1, 2, None).unwrap();
        assert_eq!(gone.len(), 1, "{gone:?}");
        assert_eq!(gone[0].path, first.path);
    }
}
