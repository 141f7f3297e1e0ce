//! ISAPI documents about the device: deviceInfo, channels, storage, admin accesses. Pure and
//! namespace-agnostic (elements by local name), like the alert parser.

use crate::model::{CameraChannel, CameraDisk, CameraTrigger};
use quick_xml::events::Event as XmlEvent;
use std::collections::HashMap;

/// Leaf values of every element named `record` (in document order), plus the document's own
/// top-level leaves under the key `""`.
pub fn records(xml: &str, record: &str) -> (HashMap<String, String>, Vec<HashMap<String, String>>) {
    let mut reader = quick_xml::Reader::from_str(xml.trim_start());
    let mut path: Vec<String> = Vec::new();
    let mut top = HashMap::new();
    let mut recs: Vec<HashMap<String, String>> = Vec::new();
    let mut text = String::new();
    let mut depth_of_record: Option<usize> = None;
    loop {
        match reader.read_event() {
            Err(_) | Ok(XmlEvent::Eof) => break,
            Ok(XmlEvent::Start(e)) => {
                let name = e.local_name().as_ref().to_string();
                if name.eq_ignore_ascii_case(record) && depth_of_record.is_none() {
                    depth_of_record = Some(path.len());
                    recs.push(HashMap::new());
                } else if let Some(d) = depth_of_record
                    && path.len() > d + 1
                    && let Some(r) = recs.last_mut()
                {
                    // Nested elements are not flattened, but their presence is recorded.
                    r.insert(format!("has:{name}"), String::new());
                }
                path.push(name);
                text.clear();
            }
            Ok(XmlEvent::Text(t)) => text.push_str(&t.xml10_content()),
            Ok(XmlEvent::GeneralRef(r)) => super::alert::push_ref(&mut text, &r),
            Ok(XmlEvent::End(_)) => {
                let leaf = path.pop().unwrap_or_default();
                let v = text.trim().to_string();
                text.clear();
                match depth_of_record {
                    Some(d) if path.len() == d => depth_of_record = None,
                    // Direct children of the record only (nested lists are not flattened in).
                    Some(d) if path.len() == d + 1 => {
                        if let Some(r) = recs.last_mut() {
                            r.entry(leaf).or_insert(v);
                        }
                    }
                    Some(_) => {}
                    None => {
                        if path.len() == 1 {
                            top.entry(leaf).or_insert(v);
                        }
                    }
                }
            }
            Ok(_) => {}
        }
    }
    (top, recs)
}

fn get(m: &HashMap<String, String>, k: &str) -> Option<String> {
    m.get(k).cloned().filter(|s| !s.is_empty())
}

/// `InputProxyChannelList` (NVR) or `VideoInputChannelList` (camera / DVR).
pub fn channels(xml: &str) -> Vec<CameraChannel> {
    let (_, mut recs) = records(xml, "InputProxyChannel");
    if recs.is_empty() {
        recs = records(xml, "VideoInputChannel").1;
    }
    recs.iter()
        .filter_map(|r| {
            Some(CameraChannel {
                id: get(r, "id")?.parse().ok()?,
                name: get(r, "name").or_else(|| get(r, "inputPort")),
            })
        })
        .collect()
}

/// `/ISAPI/ContentMgmt/Storage`: HDDs with status, capacity and free space (MB).
pub fn disks(xml: &str) -> Vec<CameraDisk> {
    records(xml, "hdd")
        .1
        .iter()
        .filter_map(|r| {
            Some(CameraDisk {
                id: get(r, "id")?.parse().ok()?,
                name: get(r, "hddName"),
                kind: get(r, "hddType"),
                property: get(r, "property"),
                status: get(r, "status")
                    .unwrap_or_else(|| "unknown".into())
                    .to_ascii_lowercase(),
                capacity_mb: get(r, "capacity").and_then(|c| c.parse().ok()),
                free_mb: get(r, "freeSpace").and_then(|c| c.parse().ok()),
            })
        })
        .collect()
}

/// Event triggers: which events the device reports, per channel or IO port. A trigger counts
/// as enabled when it has a notification (`center` / HTTP); a device that lists none at all
/// gets every trigger.
pub fn triggers(xml: &str) -> Vec<CameraTrigger> {
    let recs = records(xml, "EventTrigger").1;
    let any_notified = recs
        .iter()
        .any(|r| r.contains_key("has:EventTriggerNotification"));
    recs.iter()
        .filter(|r| !any_notified || r.contains_key("has:EventTriggerNotification"))
        .filter_map(|r| {
            let num = |k: &str| {
                get(r, k)
                    .and_then(|v| v.parse::<u32>().ok())
                    .filter(|v| *v > 0)
            };
            Some(CameraTrigger {
                event_type: super::alert::normalise_type(&get(r, "eventType")?),
                channel: num("videoInputChannelID").or_else(|| num("dynVideoInputChannelID")),
                io_port: num("inputIOPortID").or_else(|| num("dynInputIOPortID")),
            })
        })
        .collect()
}

/// The RTSP port from `/ISAPI/Security/adminAccesses` (not always 554).
pub fn rtsp_port(xml: &str) -> Option<u16> {
    records(xml, "AdminAccessProtocol")
        .1
        .iter()
        .find(|r| get(r, "protocol").is_some_and(|p| p.eq_ignore_ascii_case("rtsp")))
        .and_then(|r| get(r, "portNo")?.parse().ok())
}

/// A day of `POST /ISAPI/ContentMgmt/record/tracks/<ch>01/dailyDistribution`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordDay {
    pub day_of_month: u32,
    /// The device has recordings of this day.
    pub record: bool,
    /// `time` (continuous) or `event`, as the device says.
    pub record_type: Option<String>,
}

/// The `<trackDailyParam>` request for a month.
pub fn daily_param(year: i32, month: u32) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><trackDailyParam><year>{year}</year><monthOfYear>{month}</monthOfYear></trackDailyParam>"
    )
}

/// The local name of the document's root element.
fn root_name(xml: &str) -> Option<String> {
    let mut reader = quick_xml::Reader::from_str(xml.trim_start());
    loop {
        match reader.read_event() {
            Ok(XmlEvent::Start(e)) | Ok(XmlEvent::Empty(e)) => {
                return Some(e.local_name().into_inner().to_string());
            }
            Err(_) | Ok(XmlEvent::Eof) => return None,
            Ok(_) => {}
        }
    }
}

/// A `<trackDailyDistribution>` answer: the days it lists, in order (days it does not list
/// are not known, not "no recording"). `None` when the document is something else (a
/// `ResponseStatus`).
pub fn daily_distribution(xml: &str) -> Option<Vec<RecordDay>> {
    if !root_name(xml)?.eq_ignore_ascii_case("trackDailyDistribution") {
        return None;
    }
    Some(
        records(xml, "day")
            .1
            .iter()
            .filter_map(|r| {
                Some(RecordDay {
                    day_of_month: get(r, "dayOfMonth")?
                        .parse()
                        .ok()
                        .filter(|d| (1..=31).contains(d))?,
                    record: get(r, "record").is_some_and(|v| v.eq_ignore_ascii_case("true")),
                    record_type: get(r, "recordType"),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_info_from_the_real_capture() {
        let xml = include_str!(
            "../../../tests/fixtures/hikvision/hiksink_deviceinfo_ptz_DS-2DE4A425IW-DE.xml"
        );
        let (top, _) = records(xml, "none");
        assert_eq!(
            top.get("model").map(String::as_str),
            Some("DS-2DE4A425IW-DE")
        );
        assert_eq!(
            top.get("firmwareVersion").map(String::as_str),
            Some("V5.5.71")
        );
        assert_eq!(top.get("deviceType").map(String::as_str), Some("IPDome"));
    }

    #[test]
    fn triggers_from_real_captures() {
        for (f, min) in [
            ("hiksink_triggers_cam.xml", 3),
            ("hiksink_triggers_ptz.xml", 3),
            ("hiksink_triggers_nvr.xml", 10),
            ("pyhik_test_event_triggers.xml", 1),
        ] {
            let xml = std::fs::read_to_string(format!(
                "{}/tests/fixtures/hikvision/{f}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            let t = triggers(&xml);
            assert!(t.len() >= min, "{f}: {t:?}");
            assert!(
                t.iter().all(|t| !t.event_type.is_empty()
                    && t.event_type == t.event_type.to_ascii_lowercase())
            );
        }
        let nvr = std::fs::read_to_string(format!(
            "{}/tests/fixtures/hikvision/hiksink_triggers_nvr.xml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let t = triggers(&nvr);
        assert!(
            t.iter()
                .any(|t| t.event_type == "vmd" && t.channel == Some(15)),
            "dynVideoInputChannelID"
        );
        assert!(
            !t.iter().any(|t| t.event_type == "io"),
            "IO triggers without a notification are not enabled"
        );
        assert!(
            t.iter()
                .any(|t| t.event_type == "diskfull" && t.channel.is_none()),
            "device-level triggers"
        );
    }

    #[test]
    fn channels_disks_and_rtsp_port_in_any_namespace() {
        let ch = r#"<?xml version="1.0"?><InputProxyChannelList xmlns="http://www.hikvision.com/ver20/XMLSchema"><InputProxyChannel><id>1</id><name>Front</name><sourceInputPortDescriptor><ipAddress>10.0.0.5</ipAddress></sourceInputPortDescriptor></InputProxyChannel><InputProxyChannel><id>2</id><name></name></InputProxyChannel></InputProxyChannelList>"#;
        let c = channels(ch);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].name.as_deref(), Some("Front"));
        assert_eq!(c[1].name, None);
        let cam = r#"<VideoInputChannelList xmlns:h="x"><VideoInputChannel><id>1</id><inputPort>1</inputPort><name>Camera 01</name></VideoInputChannel></VideoInputChannelList>"#;
        assert_eq!(channels(cam)[0].name.as_deref(), Some("Camera 01"));
        let st = r#"<storage><hddList><hdd><id>1</id><hddName>hdd1</hddName><status>ok</status><capacity>1907729</capacity><freeSpace>1024</freeSpace></hdd><hdd><id>2</id><status>error</status></hdd></hddList></storage>"#;
        let d = disks(st);
        assert_eq!((d[0].status.as_str(), d[0].free_mb), ("ok", Some(1024)));
        assert_eq!(d[1].status, "error");
        assert_eq!(
            (
                d[0].name.as_deref(),
                d[0].kind.as_deref(),
                d[1].name.as_deref()
            ),
            (Some("hdd1"), None, None)
        );
        let aa = r#"<AdminAccessProtocolList><AdminAccessProtocol><id>1</id><enabled>true</enabled><protocol>HTTP</protocol><portNo>80</portNo></AdminAccessProtocol><AdminAccessProtocol><id>4</id><enabled>true</enabled><protocol>RTSP</protocol><portNo>8554</portNo></AdminAccessProtocol></AdminAccessProtocolList>"#;
        assert_eq!(rtsp_port(aa), Some(8554));
        assert!(channels("<html>403</html>").is_empty());
    }

    #[test]
    fn daily_distribution_in_any_namespace() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<trackDailyDistribution version="1.0" xmlns="http://www.isapi.com/ver20/XMLSchema"><dayList>
<day><id>1</id><dayOfMonth>1</dayOfMonth><record>false</record></day>
<day><id>2</id><dayOfMonth>2</dayOfMonth><record>true</record><recordType>time</recordType></day>
<day><id>3</id><dayOfMonth>40</dayOfMonth><record>true</record></day>
</dayList></trackDailyDistribution>"#;
        let d = daily_distribution(xml).unwrap();
        assert_eq!(d.len(), 2, "day 40 is no day");
        assert!(!d[0].record);
        assert_eq!(
            d[1],
            RecordDay {
                day_of_month: 2,
                record: true,
                record_type: Some("time".into())
            }
        );
        assert_eq!(
            daily_distribution("<ResponseStatus><statusCode>4</statusCode></ResponseStatus>"),
            None
        );
        assert_eq!(daily_distribution("not xml"), None);
        assert!(daily_param(2025, 1).contains("<year>2025</year><monthOfYear>1</monthOfYear>"));
    }

    #[test]
    fn escaped_characters_in_names_are_decoded() {
        let ch = r#"<InputProxyChannelList><InputProxyChannel><id>1</id><name>Gate &amp; Drive</name></InputProxyChannel><InputProxyChannel><id>2</id><name>Caf&#233; &lt;back&gt;</name></InputProxyChannel></InputProxyChannelList>"#;
        let c = channels(ch);
        assert_eq!(c[0].name.as_deref(), Some("Gate & Drive"));
        assert_eq!(c[1].name.as_deref(), Some("Café <back>"));
        let (top, _) = records(
            "<DeviceInfo><deviceName>Hall &amp; stairs</deviceName></DeviceInfo>",
            "-",
        );
        assert_eq!(top["deviceName"], "Hall & stairs");
    }
}
