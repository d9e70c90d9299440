"use strict";
// The Firmware tab: the running image, and an upload that checks the file's ESP32 app image
// header here first (what smartbms/ota/image.py checks at the start of an upload), explains
// every refusal and says that nothing changed; the bar follows the device's answer.
(function () {
  var SB = window.SB, $ = SB.$, txt = SB.txt;
  var SLOT = 0x1D0000, CHIPS = {2: "ESP32-S2", 5: "ESP32-C3", 9: "ESP32-S3", 12: "ESP32-C2", 13: "ESP32-C6", 16: "ESP32-H2", 18: "ESP32-P4"};

  function running() {
    var s = SB.status(), d = s && s.device || {};
    return (d.ota && d.ota.running_version) || d.version || "its current firmware";
  }
  function unchanged() { return " Nothing was changed: the device keeps running " + running() + "."; }
  function render(s) {
    var d = s.device || {}, o = d.ota || {};
    txt("frun", o.running_version || d.version || "–");
    txt("fprev", o.previous_version || "–");
    txt("fslot", o.running || "–");
    txt("fpend", o.pending_verify ? "yes (not yet confirmed healthy)" : "no");
    txt("fovr", overrides(d.overrides));
  }
  SB.hooks.push(render);
  // modules `make deploy` put on the device's filesystem, running instead of the image's copies
  function overrides(v) {
    if (!v || v.error) return "–";
    var m = v.modules || [], f = v.failed || [], out = [];
    if (m.length) out.push(m.join(", ") + " (an OTA does not replace them; make undeploy removes them)");
    if (f.length) out.push("failed, the image's copy runs: " + f.join("; "));
    if (v.skipped) out.push("not loaded: " + v.skipped);
    return out.length ? out.join(" · ") : "none: the image runs as built";
  }
  function cstr(b, at, n) {
    var s = "";
    for (var i = at; i < at + n && b[i]; i++) s += String.fromCharCode(b[i]);
    return s;
  }
  // null when the start of the file looks like a smartbms app image, else why not (plain words)
  function check(b, size) {
    var u16 = function (i) { return b[i] | b[i + 1] << 8; }, u32 = function (i) { return (u16(i) | u16(i + 2) << 16) >>> 0; };
    if (size < 24 + 8 + 256) return "This file is only " + size + " bytes: far too small to be firmware.";
    if (size > SLOT) return "This file is " + Math.round(size / 1024) + " KB, larger than the device's firmware slot (" + SLOT / 1024 + " KB).";
    if (b[0] !== 0xE9) {
      var text = true;
      for (var i = 0; i < Math.min(b.length, 256); i++) if (b[i] < 9 || (b[i] > 13 && b[i] < 32)) text = false;
      return "This is not a firmware image: " + (text ? "it is a text file" : "it does not start like an ESP32 app image (first byte 0x" + ("0" + b[0].toString(16)).slice(-2) + ", expected 0xe9)") + ".";
    }
    if (b[1] < 1 || b[1] > 16) return "This file is damaged or not an app image (it says it has " + b[1] + " segments).";
    if (u16(12) !== 0) return "This firmware is for another chip (" + (CHIPS[u16(12)] || "chip id " + u16(12)) + "); this device is an ESP32.";
    if (b[23] !== 1) return "This image has no checksum block: it is not an ESP-IDF app image.";
    var addr = u32(24);
    if (addr < 0x3F400000 || addr >= 0x3F800000) return "This is a bootloader or the merged firmware.bin for flashing over USB; choose micropython.bin instead.";
    if (u32(32) !== 0xABCD5432) return "This image has no app description: it is not a smartbms build (choose micropython.bin).";
    var project = cstr(b, 32 + 0x30, 32), version = cstr(b, 32 + 0x10, 32);
    if (project !== "micropython") return "This is another project's firmware (" + (project || "unnamed") + "), not smartbms.";
    if (!/^\d+\.\d+\.\d+([-+].*)?$/.test(version)) return "This image's version (" + (version || "none") + ") is not a smartbms version: stock MicroPython?";
    return {version: version};
  }
  // Each refusal the device can give (smartbms/ota/image.py, ota/http.py, ota/updater.py, the
  // web layer's 413/503) in the owner's words, first match wins; its own text goes under Details.
  var WHY = [
    [/checksum|does not match the image/, "the file is damaged or incomplete (its checksum does not match)."],
    [/match X-Image/, "the file does not match the SHA-256 given for it."],
    [/truncated/, "the file is incomplete: it ends in the middle of the image (a download cut short?)."],
    [/upload ended/, "the upload was cut short before the whole file arrived."],
    [/cannot fetch/, "it could not download the image from that address."],
    [/refused the written/, "its bootloader refused the written image."],
    [/bootloader|merged/, "this is a bootloader or the merged firmware.bin for flashing over USB; choose micropython.bin."],
    [/trailing/, "the file has extra data after the image: it is not micropython.bin as built."],
    [/foreign|stock|unnamed/, "this is not a smartbms build (stock MicroPython or another project's firmware)."],
    [/chip id/, "this firmware is for another chip; this device is an ESP32."],
    [/not an ESP32|appended/, "this is not an ESP32 app image."],
    [/segment/, "the file is damaged: its parts do not form a valid image."],
    [/larger|does not fit|too large/, "the file is too large for the device's firmware slot."],
    [/too short|empty body/, "the file is far too small to be firmware."],
    [/not confirmed/, "the firmware it runs has not confirmed itself healthy yet; try again in a minute."],
    [/another upload/, "another upload is in progress; try again when it ends."],
    [/stalled/, "the upload stalled: no data arrived for a while."],
    [/flash|read-back/, "writing to its flash memory failed; try again."],
    [/memory/, "it is short of memory for a moment; try again shortly."]
  ];
  function why(t) {
    for (var i = 0; i < WHY.length; i++) if (WHY[i][0].test(t)) return WHY[i][1];
    return null;
  }
  SB.fwWhy = why;
  // `p`err says what went wrong and that nothing changed; `p`det holds the device's own text
  function say(p, msg, tech) {
    txt(p + "err", msg && msg + unchanged());
    $(p + "det").classList.toggle("hide", !tech);
    txt(p + "tech", tech || "");
  }
  function fail(msg, tech, p) {
    if (!p) { $("fprog").classList.add("hide"); txt("fstep", ""); }
    say(p || "f", msg, tech);
  }
  function refused(prefix, t, p) {
    var w = why(t);
    fail(prefix + (w || t + "."), w && t, p);
  }
  $("ffile").addEventListener("change", function () {
    say("f", ""); txt("fmsg", ""); txt("finfo", "");
    var file = $("ffile").files[0];
    if (!file) return;
    file.slice(0, 4096).arrayBuffer().then(function (buf) {
      var r = check(new Uint8Array(buf), file.size);
      if (typeof r === "string") fail(r);
      else txt("finfo", "smartbms " + r.version + " (" + Math.round(file.size / 1024) + " KB); running now: " + running() + ".");
    });
  });
  $("fup").addEventListener("submit", function (e) {
    e.preventDefault();
    var file = $("ffile").files[0], prog = $("fprog"), btn = $("fup").querySelector("button");
    say("f", ""); txt("fmsg", ""); txt("fstep", "");
    if (!file) { txt("ferr", "Choose the firmware file (micropython.bin) first."); return; }
    file.slice(0, 4096).arrayBuffer().then(function (buf) {
      var r = check(new Uint8Array(buf), file.size);
      if (typeof r === "string") { fail(r); return; }
      var x = new XMLHttpRequest();
      x.open("POST", "/api/ota");
      x.setRequestHeader("Content-Type", "application/octet-stream");
      prog.value = 0; prog.classList.remove("hide"); btn.disabled = true;
      txt("fstep", "Sending " + r.version + "…");
      // sending is 90 % of the bar; the last 10 % is the device's verdict
      x.upload.onprogress = function (ev) { if (ev.lengthComputable) prog.value = ev.loaded * 90 / ev.total; };
      x.upload.onload = function () { txt("fstep", "Sent; the device is checking the image…"); };
      x.onload = function () {
        var j = {};
        try { j = JSON.parse(x.responseText); } catch (err) { j = {}; }
        btn.disabled = false;
        if (x.status === 401) { location.href = "/login"; return; }
        if (x.status >= 200 && x.status < 300) {
          prog.value = 100; txt("fstep", "");
          txt("fmsg", "Installed " + (j.version || r.version) + (j.slot ? " in " + j.slot : "") + (j.reboot === false ? "." : "; the device restarts now and confirms it once it runs well (else it goes back to " + running() + " by itself)."));
        } else refused("The device refused the image: ", j.error || "HTTP " + x.status);
      };
      x.onerror = function () { btn.disabled = false; fail("The connection was lost during the upload; an incomplete image is never installed."); };
      x.send(file);
    });
  });
  $("furl").addEventListener("submit", function (e) {
    e.preventDefault();
    var url = $("uurl").value.trim(), sha = $("usha").value.trim().toLowerCase();
    say("u", ""); txt("umsg", "");
    if (!/^https?:\/\/\S+$/.test(url)) { txt("uerr", "Enter an http:// URL"); return; }
    if (!/^[0-9a-f]{64}$/.test(sha)) { txt("uerr", "SHA-256 must be 64 hex digits"); return; }
    txt("umsg", "Downloading…");
    SB.api("POST", "/api/ota/url", {url: url, sha256: sha}).then(function (j) {
      txt("umsg", "Installed " + (j.version || "the image") + (j.slot ? " in " + j.slot : "") + "; the device restarts now.");
    }, function (err) { txt("umsg", ""); refused("Not installed: ", err.message, "u"); });
  });
  $("reboot").addEventListener("click", function () {
    if (!confirm("Reboot the device? The relay switches off while it restarts.")) return;
    SB.api("POST", "/api/reboot", {}).then(function () { txt("rmsg", "Rebooting…"); }, function (e) { txt("rmsg", e.message); });
  });
})();
