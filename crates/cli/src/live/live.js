// jobtide dev's live page: polls /live/state.json every 2 s and draws it.
// Every value from the server goes into the page as text (textContent) or as a number this
// script computed (SVG coordinates); nothing is ever parsed as markup, so a ScaledJob name or
// topic like "<img src=x onerror=…>" shows as those characters.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bc4c00", "#116329", "#a40e26", "#0550ae"];

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function condition(sj, type) {
  return sj.conditions.find((c) => c.type === type);
}

function conditionCell(c) {
  if (!c) return el("td", { class: "empty" }, "—");
  const good = c.status === "True";
  const cell = el("td", { class: good ? "ok" : "warn" }, c.reason || c.status);
  if (c.message) cell.title = c.message;
  return cell;
}

function drawScaledJobs(state) {
  const body = document.getElementById("scaled-jobs");
  body.replaceChildren();
  for (const sj of state.scaledJobs) {
    const row = el("tr", { class: "scaled-job", "data-mode": sj.mode });
    row.append(
      el("td", { class: "name" }, sj.namespace + "/" + sj.name),
      el("td", {}, sj.mode),
      el("td", { class: "topics" }, sj.topics.join(", ")),
      el("td", { class: "num lag" }, sj.lag === null ? "—" : sj.lag),
      el("td", { class: "num" }, sj.jobs.pending),
      el("td", { class: "num" }, sj.jobs.running),
      el("td", { class: "num" }, sj.jobs.succeeded),
      el("td", { class: "num" }, sj.jobs.failed),
      conditionCell(condition(sj, "CapacityAvailable")),
      conditionCell(condition(sj, "Ready")),
    );
    body.append(row);
  }
  if (state.scaledJobs.length === 0) {
    const row = el("tr");
    row.append(el("td", { colspan: 10, class: "empty" }, "no ScaledJobs yet"));
    body.append(row);
  }
}

// One chart per ScaledJob: a polyline (and a dot per sample) per partition, time on x.
function drawLag(state) {
  const root = document.getElementById("lag");
  root.replaceChildren();
  document.getElementById("window").textContent =
    "(last " + Math.round(state.windowSeconds / 60) + " minutes, one sample per poll)";
  const width = 640, height = 150, left = 44, right = 150, top = 8, bottom = 20;
  const start = state.now - state.windowSeconds * 1000;
  for (const sj of state.scaledJobs) {
    const section = el("section", { class: "lag-chart", "data-mode": sj.mode });
    section.append(el("h3", {}, sj.namespace + "/" + sj.name));
    if (sj.partitions.length === 0) {
      section.append(el("div", { class: "empty" }, "not measured yet"));
      root.append(section);
      continue;
    }
    const samples = sj.partitions.flatMap((p) => p.samples);
    const first = Math.max(start, Math.min(...samples.map((s) => s.at)));
    const span = Math.max(state.now - first, 10000);
    const max = Math.max(1, ...samples.map((s) => s.lag));
    const x = (at) => left + ((at - first) / span) * (width - left - right);
    const y = (lag) => top + (1 - lag / max) * (height - top - bottom);
    const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}` });
    chart.append(
      svg("line", { class: "axis", x1: left, y1: y(0), x2: width - right, y2: y(0) }),
      svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: y(0) }),
      svg("text", { x: left - 6, y: top + 9, "text-anchor": "end" }, max),
      svg("text", { x: left - 6, y: y(0), "text-anchor": "end" }, 0),
      svg("text", { x: left, y: height - 4 }, Math.round((state.now - first) / 1000) + " s ago"),
      svg("text", { x: width - right, y: height - 4, "text-anchor": "end" }, "now"),
    );
    sj.partitions.forEach((p, i) => {
      const color = COLORS[i % COLORS.length];
      const group = svg("g", {
        class: "series",
        "data-partition": Number(p.partition),
        "data-points": p.samples.length,
      });
      const points = p.samples.map((s) => `${x(s.at).toFixed(1)},${y(s.lag).toFixed(1)}`);
      group.append(svg("polyline", { points: points.join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
      for (const s of p.samples) {
        group.append(svg("circle", { cx: x(s.at).toFixed(1), cy: y(s.lag).toFixed(1), r: 2.5, fill: color }));
      }
      const last = p.samples[p.samples.length - 1];
      group.append(
        svg("text", { class: "legend", x: width - right + 8, y: top + 12 + i * 14, fill: color },
          `${p.topic}/${p.partition}: ${last ? last.lag : "—"}`),
      );
      chart.append(group);
    });
    section.append(chart);
    root.append(section);
  }
}

// The Jobs on a timeline: grey while pending (created → its pod started), blue while running,
// ending in green (succeeded) or red (failed).
function drawJobs(state) {
  const root = document.getElementById("jobs");
  root.replaceChildren();
  const jobs = state.jobs;
  if (jobs.length === 0) {
    root.append(el("div", { class: "empty" }, "no Jobs yet"));
    return;
  }
  const row = 16, label = 300, width = 960, top = 4;
  const first = Math.min(...jobs.map((j) => j.created ?? state.now));
  const span = Math.max(state.now - first, 10000);
  const x = (at) => label + ((at - first) / span) * (width - label - 10);
  const chart = svg("svg", { width, height: top + jobs.length * row + 18 });
  jobs.forEach((j, i) => {
    const y = top + i * row;
    const created = j.created ?? state.now;
    const running = j.running ?? (j.finished ?? state.now);
    const finished = j.finished ?? state.now;
    const group = svg("g", { class: "job", "data-state": j.state, "data-running": j.running !== null });
    group.append(svg("text", { x: 0, y: y + 11 }, `${j.scaledJob} · ${j.name}`));
    group.append(svg("rect", { x: x(created), y: y + 3, width: Math.max(1, x(running) - x(created)), height: 10, fill: "#afb8c1" }));
    if (j.running !== null) {
      group.append(svg("rect", { x: x(running), y: y + 3, width: Math.max(2, x(finished) - x(running)), height: 10, fill: "#0969da" }));
    }
    if (j.finished !== null) {
      const color = j.state === "succeeded" ? "#1a7f37" : "#cf222e";
      group.append(svg("rect", { x: x(finished) - 2, y: y + 1, width: 4, height: 14, fill: color }));
    }
    const tip = svg("title", {}, `${j.name}: ${j.state}`);
    group.append(tip);
    chart.append(group);
  });
  chart.append(svg("text", { x: label, y: top + jobs.length * row + 14 }, Math.round(span / 1000) + " s ago"));
  chart.append(svg("text", { x: width - 10, y: top + jobs.length * row + 14, "text-anchor": "end" }, "now"));
  root.append(chart);
}

async function refresh() {
  try {
    const response = await fetch("/live/state.json", { cache: "no-store" });
    if (!response.ok) throw new Error(response.status + " " + (await response.text()));
    const state = await response.json();
    drawScaledJobs(state);
    drawLag(state);
    drawJobs(state);
    document.getElementById("updated").textContent =
      "updated " + new Date(state.now).toLocaleTimeString();
    document.getElementById("error").textContent = "";
  } catch (error) {
    document.getElementById("error").textContent = "could not refresh: " + error;
  }
}

refresh();
setInterval(refresh, 2000);
