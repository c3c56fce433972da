// lib_trainer's LoRA Train tab: live progress.
// - Clicks the tab's Refresh button about once a second while the tab is visible, so the
//   progress, loss chart and queue stay current (see lib_trainer/ui/live_view.py), and the
//   Compare sub-tab's poll button while it shows (lib_trainer/ui/compare_job.py).
// - While a training runs, shows its progress in the browser tab's title ("[42%] ...").
// Touches nothing outside #lib_trainer_tab.
(function () {
    if (window.libTrainerTimer) return;  // loaded once, whichever host loaded it
    var originalTitle = null;

    function root() {
        var app = document.querySelector("gradio-app");
        return (app && app.shadowRoot) || document;
    }

    function tick() {
        var tab = root().querySelector("#lib_trainer_tab");
        if (!tab || document.hidden) return;
        var button = tab.querySelector("#lt_refresh");
        if (button && button.offsetParent !== null) button.click();
        var poll = tab.querySelector("#lt_compare_poll");
        if (poll && poll.offsetParent !== null) poll.click();
        var box = tab.querySelector(".lt-progress");
        if (!box) return;
        var step = parseInt(box.dataset.step || "0"), total = parseInt(box.dataset.total || "0");
        if (box.dataset.phase === "training" && total > 0) {
            if (originalTitle === null) originalTitle = document.title.replace(/^\[\d+%\] /, "");
            document.title = "[" + Math.floor(100 * step / total) + "%] " + originalTitle;
        } else if (originalTitle !== null) {
            document.title = originalTitle;
            originalTitle = null;
        }
    }

    window.libTrainerTimer = setInterval(tick, 1000);
})();
