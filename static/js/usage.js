// Draws the usage chart from the JSON the server embeds; redraws after htmx swaps the body.
(function () {
  "use strict";
  var chart = null;
  var names = {requests: "Requests", tokens: "Tokens", cost: "Spend (USD)"};
  function draw() {
    var data = document.getElementById("usage-chart-data");
    var canvas = document.getElementById("usage-chart");
    if (chart) { chart.destroy(); chart = null; }
    if (!data || !canvas || typeof Chart === "undefined") return;
    var d = JSON.parse(data.textContent);
    var metric = (document.getElementById("f-metric") || {}).value;
    metric = {cost_micros: "cost"}[metric] || metric || d.metric;
    chart = new Chart(canvas, {
      type: "bar",
      data: {labels: d.labels, datasets: [{label: names[metric], data: d.series[metric], backgroundColor: "#20b2aa"}]},
      options: {responsive: true, maintainAspectRatio: false, animation: false,
        plugins: {legend: {display: false}},
        scales: {y: {beginAtZero: true}, x: {ticks: {maxRotation: 0, autoSkip: true}}}}
    });
  }
  document.addEventListener("DOMContentLoaded", draw);
  document.addEventListener("htmx:afterSettle", draw);
})();
