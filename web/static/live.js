// Live alerts: listens to the server-sent events of /alerts/stream and puts each new alert at the
// top of the page. Text goes in with textContent only, never as HTML.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.EventSource) { return; }
  var source = new EventSource(live.dataset.stream);
  source.addEventListener("alert", function (e) {
    var a = JSON.parse(e.data);
    var box = document.createElement("p");
    box.className = "flash error live-alert";
    var link = document.createElement("a");
    link.href = live.dataset.detail + "/" + encodeURIComponent(a.id);
    link.textContent = "NEW ALERT (UNCONFIRMED): " + a.plate + " matches " + a.entry_plate + " on " + a.hotlist +
      " (" + a.reason + ", " + a.match_kind + " " + Number(a.score).toFixed(2) + ")";
    box.appendChild(link);
    live.insertBefore(box, live.firstChild);
  });
  source.onerror = function () { live.dataset.state = "reconnecting"; };
  source.onopen = function () { live.dataset.state = "open"; };
}());
