// Live updates of the run page: follows the run's Server-Sent Events
// (GET /api/v1/runs/{id}/events: `run` with RunInfo JSON, `log` with LogLineInfo JSON, `end`),
// appends log lines and updates the run's and jobs' statuses without reloading.
//
// Log text is turned into DOM nodes with textContent (never parsed as HTML). ANSI SGR colours
// become the same classes the server's converter (src/ui/ansi.rs) produces; other escape
// sequences and control characters are dropped. Lines already on the page (server-rendered)
// are recognised by their key `attempt:seq:job` and not added twice when the stream replays them.
(function () {
  "use strict";

  var page = document.getElementById("run");
  if (!page) {
    return;
  }
  var runId = page.dataset.run;
  var log = document.getElementById("log");
  var empty = document.getElementById("log-empty");
  var live = document.getElementById("live");
  var seen = new Set();
  Array.prototype.forEach.call(log.querySelectorAll(".line"), function (line) {
    seen.add(line.dataset.key);
  });

  var COLOURS = ["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"];

  function colourClass(prefix, colour) {
    return prefix + (colour >= 8 ? "bright-" : "") + COLOURS[colour % 8];
  }

  function classesOf(style) {
    var classes = [];
    if (style.bold) {
      classes.push("ansi-bold");
    }
    if (style.fg !== null) {
      classes.push(colourClass("ansi-", style.fg));
    }
    if (style.bg !== null) {
      classes.push(colourClass("ansi-bg-", style.bg));
    }
    return classes.join(" ");
  }

  function applySgr(style, parameters) {
    var codes = parameters.split(/[;:]/).map(function (code) {
      return code === "" ? 0 : parseInt(code, 10);
    });
    for (var i = 0; i < codes.length; i++) {
      var code = codes[i];
      if (code === 0) {
        style.bold = false;
        style.fg = null;
        style.bg = null;
      } else if (code === 1) {
        style.bold = true;
      } else if (code === 22) {
        style.bold = false;
      } else if (code >= 30 && code <= 37) {
        style.fg = code - 30;
      } else if (code === 39) {
        style.fg = null;
      } else if (code >= 40 && code <= 47) {
        style.bg = code - 40;
      } else if (code === 49) {
        style.bg = null;
      } else if (code >= 90 && code <= 97) {
        style.fg = code - 90 + 8;
      } else if (code >= 100 && code <= 107) {
        style.bg = code - 100 + 8;
      } else if (code === 38 || code === 48) {
        if (codes[i + 1] === 5) {
          i += 2;
        } else if (codes[i + 1] === 2) {
          i += 4;
        }
      }
    }
  }

  function isControl(code) {
    return code < 0x20 || (code >= 0x7f && code <= 0x9f);
  }

  // Appends the styled text of `text` to `into`.
  function renderAnsi(text, into) {
    var style = { bold: false, fg: null, bg: null };
    var buffer = "";
    var bufferClasses = "";
    function flush() {
      if (buffer === "") {
        return;
      }
      if (bufferClasses === "") {
        into.appendChild(document.createTextNode(buffer));
      } else {
        var span = document.createElement("span");
        span.className = bufferClasses;
        span.textContent = buffer;
        into.appendChild(span);
      }
      buffer = "";
    }
    function push(character) {
      var classes = classesOf(style);
      if (classes !== bufferClasses) {
        flush();
        bufferClasses = classes;
      }
      buffer += character;
    }
    var i = 0;
    while (i < text.length) {
      var character = text[i];
      var code = text.charCodeAt(i);
      i++;
      if (character === "\u001b") {
        var kind = text[i];
        i++;
        if (kind === "[") {
          var parameters = "";
          var terminator = null;
          while (i < text.length) {
            var next = text.charCodeAt(i);
            i++;
            if (next >= 0x40 && next <= 0x7e) {
              terminator = String.fromCharCode(next);
              break;
            }
            parameters += String.fromCharCode(next);
          }
          if (terminator === "m" && /^[0-9;:]*$/.test(parameters)) {
            applySgr(style, parameters);
          }
        } else if (kind !== undefined && kind >= " " && kind <= "/") {
          while (i < text.length && text[i] >= " " && text[i] <= "/") {
            i++;
          }
          i++;
        } else if (kind === "]") {
          while (i < text.length) {
            if (text[i] === "\u0007") {
              i++;
              break;
            }
            if (text[i] === "\u001b" && text[i + 1] === "\\") {
              i += 2;
              break;
            }
            i++;
          }
        }
      } else if (character === "\t" || !isControl(code)) {
        push(character);
      }
    }
    flush();
  }

  function appendLine(line) {
    var key = line.attempt + ":" + line.seq + ":" + (line.job === null || line.job === undefined ? "" : line.job);
    if (seen.has(key)) {
      return;
    }
    seen.add(key);
    var stickToBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 40;
    var row = document.createElement("div");
    row.className = "line " + line.stream;
    row.dataset.key = key;
    if (line.job) {
      var tag = document.createElement("span");
      tag.className = "job-tag";
      tag.textContent = line.job;
      row.appendChild(tag);
    }
    var body = document.createElement("span");
    body.className = "text";
    renderAnsi(line.text, body);
    row.appendChild(body);
    log.appendChild(row);
    if (empty) {
      empty.hidden = true;
    }
    if (stickToBottom) {
      log.scrollTop = log.scrollHeight;
    }
  }

  // Mirrors duration_text in src/ui/view.rs.
  function durationText(ms) {
    ms = Math.max(0, Math.floor(ms));
    if (ms < 1000) {
      return ms + "ms";
    }
    var seconds = Math.floor(ms / 1000);
    var pad = function (n) {
      return (n < 10 ? "0" : "") + n;
    };
    if (seconds < 60) {
      return seconds + "s";
    }
    if (seconds < 3600) {
      return Math.floor(seconds / 60) + "m " + pad(seconds % 60) + "s";
    }
    return Math.floor(seconds / 3600) + "h " + pad(Math.floor((seconds % 3600) / 60)) + "m";
  }

  // The server's clock minus the browser's, so running durations count from the server's times.
  var clockOffset = (parseInt(page.dataset.now, 10) || Date.now()) - Date.now();

  function refreshDurations() {
    var now = Date.now() + clockOffset;
    Array.prototype.forEach.call(document.querySelectorAll("[data-started]"), function (element) {
      var started = parseInt(element.dataset.started, 10);
      var finished = element.dataset.finished ? parseInt(element.dataset.finished, 10) : now;
      element.textContent = durationText(finished - started);
    });
  }

  function setSpan(element, started, finished) {
    if (!element) {
      return;
    }
    if (started === null || started === undefined) {
      delete element.dataset.started;
      delete element.dataset.finished;
      element.textContent = "—";
      return;
    }
    element.dataset.started = String(started);
    if (finished === null || finished === undefined) {
      delete element.dataset.finished;
    } else {
      element.dataset.finished = String(finished);
    }
  }

  function setBadge(badge, state) {
    badge.className = "badge status-" + state;
    badge.textContent = state;
  }

  function isFinal(state) {
    return state !== "queued" && state !== "running";
  }

  function updateRun(run) {
    setBadge(document.getElementById("run-status"), run.state);
    var reason = document.getElementById("run-reason");
    if (run.reason) {
      reason.textContent = run.reason;
      reason.hidden = false;
    }
    setSpan(document.getElementById("run-duration"), run.started_at, run.finished_at);
    var boxes = document.querySelectorAll(".job-box");
    run.jobs.forEach(function (job) {
      Array.prototype.forEach.call(boxes, function (box) {
        if (box.dataset.job !== job.name) {
          return;
        }
        box.className = "job-box status-" + job.state;
        setSpan(box.querySelector(".job-duration"), job.started_at, job.finished_at);
        var badge = box.querySelector(".badge");
        if (badge) {
          setBadge(badge, job.state);
        }
      });
    });
    refreshDurations();
    if (isFinal(run.state)) {
      var cancel = document.getElementById("cancel-form");
      if (cancel) {
        cancel.remove();
      }
      page.dataset.finished = "true";
      // The stream sends the last lines and `end` next; stop waiting for it after a while.
      if (!closing) {
        closing = setTimeout(stop, 5000);
      }
    }
  }

  var source = null;
  var closing = null;
  var ticker = null;
  function stop() {
    if (source) {
      source.close();
    }
    if (ticker) {
      clearInterval(ticker);
    }
    refreshDurations();
    live.hidden = true;
  }

  if (page.dataset.finished === "true" || typeof EventSource === "undefined") {
    return;
  }
  ticker = setInterval(refreshDurations, 1000);
  source = new EventSource("/api/v1/runs/" + encodeURIComponent(runId) + "/events");
  source.onopen = function () {
    live.hidden = false;
    live.textContent = "live";
    live.className = "live";
  };
  source.onerror = function () {
    live.hidden = false;
    live.textContent = "reconnecting…";
    live.className = "live lost";
  };
  source.addEventListener("run", function (event) {
    updateRun(JSON.parse(event.data));
  });
  source.addEventListener("log", function (event) {
    appendLine(JSON.parse(event.data));
  });
  source.addEventListener("end", stop);
})();
