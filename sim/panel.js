"use strict";
// The sim panel's page (sim/panel.py): buttons post an action, the state line refreshes.
(function () {
  var $ = function (id) { return document.getElementById(id); };
  function act(body) {
    return fetch("/action", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)})
      .then(function (r) { return r.json(); })
      .then(function (j) { $("did").textContent = j.ok ? "Done: " + j.did : "Refused: " + j.error; refresh(); });
  }
  function refresh() {
    fetch("/state").then(function (r) { return r.json(); }).then(function (s) {
      var b = s.world.battery || {}, p = (s.world.peers || []).filter(function (x) { return x.mac === s.bms_mac; })[0] || {};
      $("state").textContent = "Clock x" + s.speed + " · SOC " + (b.soc || 0).toFixed(1) + " % · " + (b.current || 0).toFixed(1) + " A · " +
        (b.temperature_c) + " °C · charger " + (s.world.charger_on ? "on" : "off") + (b.fault ? " · BMS fault " + b.fault : "") +
        " · BMS link " + (p.connected ? "connected" : "down") + " · device " + (s.world.device ? "running" : "restarting") +
        (s.restarts ? " (restarted " + s.restarts + "×)" : "");
      if (!$("speeds").firstChild) s.speeds.forEach(function (n) {
        var b = document.createElement("button");
        b.textContent = "×" + n;
        b.addEventListener("click", function () { act({name: "speed", speed: n}); });
        $("speeds").appendChild(b);
        $("speeds").appendChild(document.createTextNode(" "));
      });
    }, function () { $("state").textContent = "The simulator is not running."; });
  }
  Array.prototype.forEach.call(document.querySelectorAll("button[data-a]"), function (b) {
    b.addEventListener("click", function () { act({name: b.getAttribute("data-a")}); });
  });
  refresh();
  setInterval(refresh, 2000);
})();
