// Live updates over server-sent events. Two pages use it:
//  - the alerts page (#live, /alerts/stream): each new alert goes on top of the page;
//  - the live view (#live-view, /live/stream): new reads go on top of the reads table, new
//    alerts on top of the open alerts, each with the rule that an alert must be verified.
// Text goes in with textContent only, never as HTML: plate text and hotlist reasons come from
// cameras and outside files.
(function () {
  "use strict";
  if (!window.EventSource) { return; }
  var MAX_READS = 50;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  // An alert as a person checks it: the plate crop, the read with the reader's own confidence and
  // the listed plate, side by side; templates/alerts/_lead.html draws the same: keep them alike.
  function lead(a) {
    var box = el("div", "lead");
    if (a.crop_url) {
      var crop = el("img", "crop");
      crop.src = a.crop_url;
      crop.alt = "Plate crop of the read";
      box.appendChild(crop);
    } else {
      box.appendChild(el("span", "crop none", "No plate crop stored" + (a.evidence_note ? ": " + a.evidence_note : "")));
    }
    var read = el("div", "read");
    read.appendChild(el("span", "label", "Read"));
    var plate = el("a", "plate big", a.plate);
    plate.href = a.url;
    read.appendChild(plate);
    read.appendChild(el("span", "confidence", "confidence " + Number(a.read_confidence).toFixed(2)));
    if (a.low_confidence) { read.appendChild(el("span", "low-read", "read with low confidence: compare every character")); }
    box.appendChild(read);
    var listed = el("div", "listed");
    listed.appendChild(el("span", "label", "Listed"));
    var entry = el("span");
    entry.appendChild(el("span", "plate big", a.entry_plate));
    entry.appendChild(document.createTextNode(a.entry_state ? " " + a.entry_state : ""));
    listed.appendChild(entry);
    var ids = [];
    if (a.entry_ori) { ids.push("ORI " + a.entry_ori); }
    if (a.entry_nic) { ids.push("NIC " + a.entry_nic); }
    if (ids.length) { listed.appendChild(el("span", "entry-ids", ids.join(", "))); }
    box.appendChild(listed);
    return box;
  }

  // Follow a stream, and come back after a refusal. EventSource retries a dropped connection by
  // itself, but a refused one (HTTP 503 when this account or the post has as many live pages open
  // as it may, a sign-in page after the session ended) closes it for good. Then try again, waiting
  // longer each time (2 s, doubling to a minute, give or take a quarter so that pages refused
  // together do not all come back at once), never in a tight loop. `wire(source)` adds the
  // page's listeners to each new source; `waiting(seconds)` and `open()` tell the page.
  function follow(url, wire, waiting, open) {
    var refusals = 0;
    function start() {
      var source = new EventSource(url);
      wire(source);
      source.addEventListener("open", function () { refusals = 0; open(); });
      source.addEventListener("error", function () {
        if (source.readyState !== EventSource.CLOSED || source.ended) { return; }
        var seconds = Math.min(60, 2 * Math.pow(2, refusals)) * (0.75 + Math.random() * 0.5);
        refusals += 1;
        waiting(Math.round(seconds));
        window.setTimeout(start, seconds * 1000);
      });
    }
    start();
  }

  // The match, labelled as the match's: its score is not the reader's confidence.
  function match(a) {
    return a.match_kind + " match" + (a.matched_text !== a.plate ? " on " + a.matched_text : "") +
      ", score " + Number(a.score).toFixed(2);
  }

  function alertsPage(live) {
    var paused = el("p", "flash error live-paused");
    function wire(source) {
      source.addEventListener("alert", function (e) {
        var a = JSON.parse(e.data);
        var box = el("div", "flash error live-alert");
        box.id = "alert-" + a.id;
        var link = el("a", null, "NEW ALERT (UNCONFIRMED): " + a.reason + " on " + a.hotlist + ", " + match(a));
        link.href = a.url;
        box.appendChild(link);
        box.appendChild(lead(a));
        live.insertBefore(box, live.firstChild);
      });
      source.addEventListener("error", function () {
        if (source.readyState !== EventSource.CLOSED) { live.dataset.state = "reconnecting"; }
      });
    }
    follow(live.dataset.stream, wire, function (seconds) {
      live.dataset.state = "waiting";
      paused.textContent = "New alerts are not arriving: the post refused the live connection (too many live " +
        "pages open, or you were signed out). Trying again in " + seconds + " s; reload the page if this lasts.";
      live.insertBefore(paused, live.firstChild);
    }, function () {
      live.dataset.state = "open";
      if (paused.parentNode) { paused.parentNode.removeChild(paused); }
    });
  }

  function liveView(view) {
    var state = document.getElementById("live-state");
    var reads = document.querySelector("#latest-reads tbody");
    var alerts = document.getElementById("open-alerts");
    function say(text) { if (state) { state.textContent = text; } view.dataset.state = text; }

    function cell(row, label, node) {
      var td = el("td");
      td.dataset.label = label;
      td.appendChild(node);
      row.appendChild(td);
    }

    function olderRow(body, captured, id) {
      for (var i = 0; i < body.rows.length; i++) {
        var other = body.rows[i].dataset;
        if (other.captured < captured || (other.captured === captured && Number(other.id) < id)) {
          return body.rows[i];
        }
      }
      return null;
    }

    function wire(source) {
      source.addEventListener("read", function (e) {
        if (!reads) { return; }
        var r = JSON.parse(e.data);
        var row = el("tr", "new" + (r.low_confidence ? " low" : ""));
        var plate = el(r.url ? "a" : "span", "plate big", r.plate);
        if (r.url) { plate.href = r.url; }
        cell(row, "Plate", plate);
        cell(row, "Time", document.createTextNode(r.captured_at));
        cell(row, "Camera", document.createTextNode(r.camera));
        var conf = el("span", null, Number(r.confidence).toFixed(2));
        if (r.low_confidence) { conf.appendChild(document.createTextNode(" ")); conf.appendChild(el("span", "low-mark", "LOW")); }
        cell(row, "Confidence", conf);
        cell(row, "Direction", document.createTextNode(r.direction || "\u2014"));
        // Newest first by capture time (then id, as the server lists them): reads of one pass can
        // arrive over the stream in another order than they were captured.
        row.dataset.captured = r.captured_utc;
        row.dataset.id = r.id;
        reads.insertBefore(row, olderRow(reads, r.captured_utc, Number(r.id)));
        while (reads.rows.length > MAX_READS) { reads.deleteRow(reads.rows.length - 1); }
        var none = document.getElementById("no-reads");
        if (none) { none.hidden = true; }
      });

      source.addEventListener("alert", function (e) {
        if (!alerts) { return; }
        var a = JSON.parse(e.data);
        var item = el("li", "alert-item unconfirmed new");
        item.id = "alert-" + a.id;
        item.appendChild(lead(a));
        item.appendChild(el("span", null, a.reason + " on " + a.hotlist + ": " + match(a) + ", " + a.created_at));
        item.appendChild(el("span", "status unconfirmed", "UNCONFIRMED"));
        item.appendChild(el("span", "must-verify",
          "Not verified: confirm through CLETS and compare the characters with the image before any action."));
        alerts.insertBefore(item, alerts.firstChild);
        var none = document.getElementById("no-open-alerts");
        if (none) { none.hidden = true; }
      });

      source.addEventListener("end", function (e) {
        source.ended = true;  // the server's own end (idle, access): not retried
        source.close();
        var why = JSON.parse(e.data).reason;
        say(why === "idle" ? "Live updates paused after the idle time. Reload the page to resume."
          : "Live updates stopped: this account may no longer see plate data. Reload the page.");
      });
      source.addEventListener("error", function () {
        if (source.readyState !== EventSource.CLOSED) { say("Connection lost; reconnecting\u2026"); }
      });
    }

    follow(view.dataset.stream, wire, function (seconds) {
      say("Live updates refused by the post (too many live pages open, or you were signed out); trying again in " +
        seconds + " s. Reload the page if this lasts.");
    }, function () { say("Live: new reads and alerts appear as they are stored."); });
  }

  var view = document.getElementById("live-view");
  if (view && view.dataset.stream) { liveView(view); }
  var live = document.getElementById("live");
  if (live && live.dataset.stream) { alertsPage(live); }
}());
