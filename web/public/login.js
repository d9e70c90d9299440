"use strict";
(function () {
  var $ = function (id) { return document.getElementById(id); };

  function post(url, body) {
    return fetch(url, {method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)})
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (j) {
          if (!r.ok) { var e = new Error(j.error || ("HTTP " + r.status)); e.status = r.status; throw e; }
          return j;
        });
      });
  }

  function busy(form, on) { form.querySelector("button").disabled = on; }

  $("login").addEventListener("submit", function (e) {
    e.preventDefault();
    var f = $("login");
    $("lerr").textContent = "";
    busy(f, true);
    post("/api/login", {password: $("pw").value}).then(function () {
      location.replace("/");
    }, function (err) {
      $("lerr").textContent = err.status === 401 ? "Wrong password" : err.message;
      $("pw").select();
    }).then(function () { busy(f, false); });
  });

  $("setup").addEventListener("submit", function (e) {
    e.preventDefault();
    var f = $("setup"), pw = $("np").value;
    $("serr").textContent = "";
    if (pw.length < 8 || pw.length > 64) { $("serr").textContent = pw.length < 8 ? "At least 8 characters" : "At most 64 characters"; return; }
    if (pw !== $("np2").value) { $("serr").textContent = "The passwords differ"; return; }
    busy(f, true);
    post("/api/setup", {password: pw}).then(function () {
      return post("/api/login", {password: pw});
    }).then(function () {
      location.replace("/");
    }, function (err) {
      $("serr").textContent = err.message;
    }).then(function () { busy(f, false); });
  });

  fetch("/api/auth", {credentials: "same-origin"}).then(function (r) { return r.json(); })
    .then(function (a) {
      if (a.logged_in && !a.setup_required) { location.replace("/"); return; }
      $(a.setup_required ? "setup" : "login").classList.remove("hide");
      if (a.setup_mode) $("gerr").textContent = "Setup mode (BOOT button): you may set a new password.";
      if (a.setup_mode && !a.setup_required) $("setup").classList.remove("hide");
    }, function () {
      $("gerr").textContent = "The device does not answer. Reload to retry.";
    });
})();
