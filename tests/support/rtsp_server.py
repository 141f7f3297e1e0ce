#!/usr/bin/python3
"""A GStreamer RTSP server for gatehouse tests (tests/common/rtsp.rs drives it).

Run with Debian's /usr/bin/python3 (it has `gi`); the packages are installed by
scripts/test.sh:
  apt-get install gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-ugly \
    gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-base \
    gstreamer1.0-tools python3-gi ffmpeg

Modes:
  --check: verify every GStreamer element used is installed (exit 3 with the apt-get line).
  serve (default): prints exactly "READY <port>" on stdout once listening, then serves until
    SIGTERM/SIGINT. Live x264 encode of videotestsrc, or --file CLIP.h264 (Annex B) in a loop
    without re-encoding.
  --encode-clip OUT.h264: encode --seconds of videotestsrc into an Annex B file and exit.

GStreamer quirks (1.22, Debian 12):
  * x264enc ignores key-int-max unless scenecut=0 (it inserts extra IDRs on scene cuts).
  * The Range header on PLAY (retina and ffmpeg both send one) is treated as a seek on a
    seekable media: with a shared media every client's stream restarts. The publish clock
    mode CLOCK_AND_OFFSET makes GstRTSPMedia report itself as not seekable (seekable = -1),
    so the Range is ignored and the pipeline keeps running.
  * There is no ONVIF metadata payloader in Debian 12 (rtponvifmetadatapay is in
    gst-plugins-rs), so the metadata track is rtpgstpay output whose caps are rewritten by
    a capssetter to encoding-name VND.ONVIF.METADATA / pt 107 (what a Hikvision SDP shows:
    "a=rtpmap:107 vnd.onvif.metadata/90000"). Only the SDP and the packet flow are real;
    the payload is rtpgstpay's framing (a serialized stream-start event and caps, then the
    XML documents), not raw XML, and the SDP keeps rtpgstpay's "a=fmtp:107 caps=...".
  * Serving a file: multifilesrc gives untimestamped buffers (the whole file as one buffer,
    continuing across loops); h264parse then sets DTS from the caps' framerate but leaves PTS
    NONE after the first frame, and rtph264pay with PTS NONE gives every packet the same RTP
    timestamp (ffprobe sees pts 0 for all frames). h264timestamper (1.22) would set PTS but
    shifts everything by 1000 hours, so `identity sync=true` then waits forever. Instead a
    pad probe copies DTS to PTS (valid: the clip has no B-frames, --encode-clip makes none)
    and `identity sync=true` paces the frames at the clip's frame rate (measured: 12 s of
    stream takes 12 s of wall clock, 25 fps, across the loop point).
  * x264's profile in the caps is only an upper bound: with speed-preset=ultrafast (no CABAC,
    no 8x8dct) profile=high still gives a Constrained Baseline SPS; x264() enables the tools.
  * server.attach() binds the socket; get_bound_port() then returns the real port for
    service "0". The socket is bound with SO_REUSEADDR, so a restart on the same port works.
"""

import argparse
import os
import signal
import sys
import warnings

# rtsp-stream reads the "pt" property of the element named payN; the ONVIF track's pay1 is a
# capssetter (see above), which has none. Harmless (the pt comes from the caps): hide it.
warnings.filterwarnings("ignore", message=".*GstCapsSetter.*has no property named 'pt'")

try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtsp", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtsp, GstRtspServer
except (ImportError, ValueError) as e:  # pragma: no cover - environment problem
    sys.stderr.write(
        "rtsp_server.py: GStreamer RTSP server bindings missing (%s). Run:\n"
        "  apt-get install gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 "
        "gstreamer1.0-plugins-ugly gstreamer1.0-plugins-good gstreamer1.0-plugins-bad "
        "gstreamer1.0-plugins-base gstreamer1.0-tools python3-gi ffmpeg\n" % e
    )
    sys.exit(3)

APT = (
    "apt-get install gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-ugly "
    "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-base "
    "gstreamer1.0-tools python3-gi ffmpeg"
)
# Elements the pipelines use, and the Debian package that has each.
NEEDED = {
    "videotestsrc": "gstreamer1.0-plugins-base",
    "audiotestsrc": "gstreamer1.0-plugins-base",
    "appsrc": "gstreamer1.0-plugins-base",
    "x264enc": "gstreamer1.0-plugins-ugly",
    "h264parse": "gstreamer1.0-plugins-bad",
    "rtph264pay": "gstreamer1.0-plugins-good",
    "rtppcmapay": "gstreamer1.0-plugins-good",
    "rtpgstpay": "gstreamer1.0-plugins-good",
    "alawenc": "gstreamer1.0-plugins-good",
    "multifilesrc": "gstreamer1.0-plugins-good",
    "capssetter": "gstreamer1.0-plugins-good",
    "identity": "gstreamer1.0 (core)",
    "filesink": "gstreamer1.0 (core)",
}


def check():
    missing = [
        "%s (%s)" % (e, pkg) for e, pkg in NEEDED.items() if Gst.ElementFactory.find(e) is None
    ]
    if missing:
        sys.stderr.write(
            "rtsp_server.py: GStreamer elements missing: %s. Run:\n  %s\n"
            % (", ".join(missing), APT)
        )
        return 3
    print("OK", flush=True)
    return 0


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument(
        "--path",
        action="append",
        default=[],
        help="mount path, repeatable or comma separated (default /Streaming/Channels/101)",
    )
    p.add_argument("--profile", choices=["baseline", "main", "high"], default="high")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=int, default=10)
    p.add_argument("--gop", type=int, default=10, help="keyframe interval in frames")
    p.add_argument("--bitrate", type=int, default=1000, help="kbit/s")
    p.add_argument(
        "--pattern",
        default="pattern=ball",
        help="videotestsrc properties; the ball compresses to almost nothing, "
        "'pattern=smpte horizontal-speed=8' reaches a camera-like bitrate",
    )
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--auth", choices=["digest", "basic", "both"], default="digest")
    p.add_argument("--extra-track", choices=["onvif", "audio"])
    p.add_argument("--file", help="serve this Annex B H.264 file in a loop (no re-encoding)")
    p.add_argument("--encode-clip", metavar="OUT", help="encode a clip to OUT and exit")
    p.add_argument("--seconds", type=int, default=10, help="length of --encode-clip")
    p.add_argument("--check", action="store_true", help="check the GStreamer elements, exit")
    a = p.parse_args()
    paths = [x.strip() for arg in a.path for x in arg.split(",") if x.strip()]
    a.path = paths or ["/Streaming/Channels/101"]
    for m in a.path:
        if not m.startswith("/"):
            p.error("--path must start with /: %r" % m)
    if (a.user is None) != (a.password is None):
        p.error("--user and --password go together")
    return a


def x264(a, live):
    # scenecut=0: otherwise x264 ignores key-int-max. bframes=0: Hikvision cameras send none,
    # and h264parse can only interpolate timestamps of a file without B-frames.
    # The profile in the caps is only an upper bound: x264 signals the lowest profile the
    # enabled tools need, and ultrafast turns CABAC and 8x8dct off (-> Constrained Baseline).
    # Turn the tools on explicitly so the SPS says what --profile asked for.
    tools = {
        "baseline": "cabac=0:8x8dct=0",
        "main": "cabac=1:8x8dct=0",
        "high": "cabac=1:8x8dct=1",
    }[a.profile]
    tune = "tune=zerolatency " if live else ""
    preset = "ultrafast" if live else "veryfast"
    return (
        "x264enc %sspeed-preset=%s key-int-max=%d bitrate=%d "
        "option-string=scenecut=0:bframes=0:%s ! video/x-h264,profile=%s"
        % (tune, preset, a.gop, a.bitrate, tools, a.profile)
    )


def raw_video(a):
    return "video/x-raw,width=%d,height=%d,framerate=%d/1" % (a.width, a.height, a.fps)


def encode_clip(a):
    frames = a.seconds * a.fps
    tmp = a.encode_clip + ".part.%d" % os.getpid()
    desc = (
        "videotestsrc num-buffers=%d %s ! %s ! %s ! h264parse ! "
        "video/x-h264,stream-format=byte-stream,alignment=au ! filesink location=%s"
        % (frames, a.pattern, raw_video(a), x264(a, live=False), tmp)
    )
    pipe = Gst.parse_launch(desc)
    pipe.set_state(Gst.State.PLAYING)
    msg = pipe.get_bus().timed_pop_filtered(
        Gst.CLOCK_TIME_NONE, Gst.MessageType.EOS | Gst.MessageType.ERROR
    )
    pipe.set_state(Gst.State.NULL)
    if msg.type == Gst.MessageType.ERROR:
        err, dbg = msg.parse_error()
        sys.stderr.write("encode failed: %s (%s)\n" % (err.message, dbg))
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return 1
    os.replace(tmp, a.encode_clip)  # atomic: readers never see a half-written clip
    print("ENCODED %s %d" % (a.encode_clip, frames), flush=True)
    return 0


def launch_line(a):
    if a.file:
        video = (
            "multifilesrc location=%s loop=true "
            'caps="video/x-h264,stream-format=byte-stream,framerate=%d/1" ! '
            "h264parse ! video/x-h264,alignment=au ! identity name=stamp sync=true ! "
            "rtph264pay name=pay0 pt=96 config-interval=-1"
            % (a.file, a.fps)
        )
    else:
        video = (
            "videotestsrc is-live=true %s ! %s ! %s ! "
            "rtph264pay name=pay0 pt=96 config-interval=-1"
            % (a.pattern, raw_video(a), x264(a, live=True))
        )
    extra = ""
    if a.extra_track == "audio":
        extra = (
            " audiotestsrc is-live=true wave=sine ! audio/x-raw,rate=8000,channels=1 ! "
            "alawenc ! rtppcmapay name=pay1 pt=8"
        )
    elif a.extra_track == "onvif":
        # See the module docstring: no real ONVIF payloader available, rename rtpgstpay's.
        extra = (
            " appsrc name=onvifsrc is-live=true format=time do-timestamp=true "
            'caps="application/x-onvif-metadata" ! rtpgstpay pt=107 ! '
            'capssetter name=pay1 join=true replace=false caps="application/x-rtp,'
            'media=(string)application,encoding-name=(string)VND.ONVIF.METADATA,'
            'clock-rate=(int)90000,payload=(int)107"'
        )
    return "( " + video + extra + " )"


ONVIF_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?><tt:MetadataStream '
    b'xmlns:tt="http://www.onvif.org/ver10/schema"><tt:VideoAnalytics/></tt:MetadataStream>'
)


def copy_dts_to_pts(_pad, info):
    buf = info.get_buffer()
    if buf.pts == Gst.CLOCK_TIME_NONE:
        buf.pts = buf.dts
    return Gst.PadProbeReturn.OK


def on_media_configure(_factory, media):
    bin_ = media.get_element()
    stamp = bin_.get_by_name("stamp")
    if stamp is not None:
        stamp.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, copy_dts_to_pts)
    onvif = bin_.get_by_name("onvifsrc")
    if onvif is None:
        return

    def push():
        buf = Gst.Buffer.new_wrapped(ONVIF_XML)
        ret = onvif.emit("push-buffer", buf)
        return ret == Gst.FlowReturn.OK  # stop when the media is torn down

    push()
    GLib.timeout_add(1000, push)


def serve(a):
    server = GstRtspServer.RTSPServer()
    server.set_address(a.bind)
    server.set_service(str(a.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(a))
    # One pipeline for all clients, like a camera: a second client joins the running stream.
    factory.set_shared(True)
    # Not seekable (see the docstring): retina's Range on PLAY must not restart the stream.
    factory.set_publish_clock_mode(GstRtspServer.RTSPPublishClockMode.CLOCK_AND_OFFSET)
    factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP)
    factory.connect("media-configure", on_media_configure)

    if a.user is not None:
        auth = GstRtspServer.RTSPAuth()
        methods = {
            "digest": GstRtsp.RTSPAuthMethod.DIGEST,
            "basic": GstRtsp.RTSPAuthMethod.BASIC,
            "both": GstRtsp.RTSPAuthMethod.DIGEST | GstRtsp.RTSPAuthMethod.BASIC,
        }[a.auth]
        auth.set_supported_methods(methods)
        auth.set_realm("IP Camera(gatehouse)")
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "user")
        if a.auth in ("basic", "both"):
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(a.user, a.password), token)
        if a.auth in ("digest", "both"):
            auth.add_digest(a.user, a.password, token)
        server.set_auth(auth)
        factory.add_role_from_structure(
            Gst.Structure.from_string(
                "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
            )[0]
        )

    mounts = server.get_mount_points()
    for m in a.path:
        mounts.add_factory(m, factory)

    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        sys.stderr.write("rtsp_server.py: cannot listen on %s:%d\n" % (a.bind, a.port))
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print("READY %d" % server.get_bound_port(), flush=True)
    loop.run()
    return 0


def main():
    a = parse_args()
    Gst.init(None)
    if a.check:
        return check()
    if a.encode_clip:
        return encode_clip(a)
    if a.file and not os.path.isfile(a.file):
        sys.stderr.write("rtsp_server.py: no such file %s\n" % a.file)
        return 2
    return serve(a)


if __name__ == "__main__":
    sys.exit(main())
