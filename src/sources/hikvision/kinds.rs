//! Hikvision event types as a person sees them: one table for their friendly names, Home
//! Assistant device classes, and whether a home wants them by default.
//!
//! Names follow what zigbee2mqtt and Frigate users expect (protocols.md §4): the device
//! carries the camera's (or NVR channel's) name, the entity a short type ("Motion"), so Home
//! Assistant shows "Front yard Motion". The raw ISAPI type stays in topics and payloads.
//! Enabled by default: what a home automates on (motion, line crossing, intrusion, region
//! entrance / exit, tamper, alarm inputs, disk problems). The rest — analytics a home rarely
//! uses, or that fire forever on an empty NVR input — are created disabled (one click in Home
//! Assistant to enable).

/// What a kind of alarm is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// Friendly name (`"Motion"`); `None` for a type not in the table (the raw type is used).
    pub name: Option<&'static str>,
    /// Lower-case words for sentences ("motion started").
    pub words: Option<&'static str>,
    /// Home Assistant `binary_sensor` device class.
    pub class: Option<&'static str>,
    /// Created enabled in Home Assistant.
    pub enabled: bool,
}

/// `(type, name, words, class, enabled)`, by normalised event type.
#[rustfmt::skip]
const TABLE: &[(&str, &str, &str, Option<&str>, bool)] = &[
    ("vmd", "Motion", "motion", Some("motion"), true),
    ("pir", "PIR", "PIR motion", Some("motion"), true),
    ("linedetection", "Line crossing", "line crossing", Some("motion"), true),
    ("fielddetection", "Intrusion", "intrusion", Some("motion"), true),
    ("regionentrance", "Region entrance", "region entrance", Some("motion"), true),
    ("regionexiting", "Region exit", "region exit", Some("motion"), true),
    ("tamperdetection", "Tamper", "tampering", Some("tamper"), true),
    ("shelteralarm", "Video tampering", "video tampering", Some("tamper"), true),
    ("defocus", "Defocus", "defocus", Some("tamper"), false),
    ("io", "Input", "alarm input", None, true),
    ("diskfull", "Disk full", "disk full", Some("problem"), true),
    ("diskerror", "Disk error", "disk error", Some("problem"), true),
    ("videoloss", "Video loss", "video loss", Some("problem"), false),
    ("facedetection", "Face", "face", Some("occupancy"), false),
    ("scenechangedetection", "Scene change", "scene change", Some("tamper"), false),
    ("unattendedbaggage", "Object left", "object left", Some("occupancy"), false),
    ("attendedbaggage", "Object removed", "object removed", Some("occupancy"), false),
    ("videomismatch", "Video standard mismatch", "video standard mismatch", Some("problem"), false),
    ("nicbroken", "Network disconnected", "network down", Some("problem"), false),
    ("ipconflict", "IP conflict", "IP conflict", Some("problem"), false),
    ("illaccess", "Illegal login", "illegal login", Some("problem"), false),
    ("badvideo", "Bad video signal", "bad video", Some("problem"), false),
    ("recordingfailure", "Recording failure", "recording failure", Some("problem"), false),
];

/// The kind of a normalised event type (`vmd`, `linedetection`, …).
pub fn kind(event_type: &str) -> Kind {
    TABLE
        .iter()
        .find(|(t, ..)| *t == event_type)
        .map(|(_, name, words, class, enabled)| Kind {
            name: Some(name),
            words: Some(words),
            class: *class,
            enabled: *enabled,
        })
        .unwrap_or(Kind {
            name: None,
            words: None,
            class: None,
            enabled: false,
        })
}

/// The entity name of an alarm: `"Line crossing"`, `"Line crossing (human)"`, `"Input 2"`;
/// an unknown type by its raw word, capitalised.
pub fn alarm_name(event_type: &str, io_port: Option<u32>, target: Option<&str>) -> String {
    let k = kind(event_type);
    let mut name = match (k.name, io_port) {
        (Some(n), Some(p)) if event_type == "io" => format!("{n} {p}"),
        (Some(n), _) => n.to_string(),
        (None, _) => {
            let mut c = event_type.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        }
    };
    if let Some(t) = target {
        name.push_str(&format!(" ({t})"));
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn friendly_names_classes_and_defaults() {
        assert_eq!(alarm_name("vmd", None, None), "Motion");
        assert_eq!(
            alarm_name("linedetection", None, Some("human")),
            "Line crossing (human)"
        );
        assert_eq!(alarm_name("io", Some(2), None), "Input 2");
        assert_eq!(alarm_name("audioexception", None, None), "Audioexception");
        assert!(kind("fielddetection").enabled && kind("diskerror").enabled);
        assert!(!kind("attendedbaggage").enabled && !kind("videoloss").enabled);
        assert!(!kind("somethingnew").enabled);
        assert_eq!(kind("tamperdetection").class, Some("tamper"));
        for (t, name, ..) in TABLE {
            assert_eq!(kind(t).name, Some(*name), "every entry reachable");
        }
    }
}
