// The controls' tooltips come from their `tooltip=` (hidiffusion_ext/webui/fields.py); the webui's hints.js shows
// them. An InputAccordion keeps its tooltip on its hidden "<id>-checkbox": show that one on the accordion's header.
onUiLoaded(function() {
    for (const comp of window.gradio_config.components) {
        const id = comp.props.elem_id;
        if (!comp.props.webui_tooltip || !id || !/^script_\w*hidiffusion_.*-checkbox$/.test(id)) {
            continue;
        }
        const accordion = gradioApp().getElementById(id.slice(0, -"-checkbox".length));
        if (accordion) {
            (accordion.querySelector(".label-wrap") || accordion).title = comp.props.webui_tooltip;
        }
    }
});

// The readout's page state (hidiffusion_ext/webui/page_state.py): which img2img resize tab is selected, and the
// server's readout version (a model loaded, a Settings value it reads changed). When either changes, our hidden
// textbox gets the new JSON and an input event, and the readout is computed again with every current value.
(function() {
    let version = 0;

    function resizeTab() {
        const selected = gradioApp().querySelector('#img2img_tabs_resize button.selected, ' +
                                                   '#img2img_tabs_resize button[aria-selected="true"]');
        return selected && /resize by/i.test(selected.textContent) ? "by" : "to";
    }

    function send(tab, state) {
        const box = gradioApp().querySelector('#script_' + tab + '_hidiffusion_page_state textarea');
        if (box && box.value !== state) {
            box.value = state;
            updateInput(box);
        }
    }

    function pollVersion() {
        if (document.visibilityState !== "visible") {
            return;
        }
        fetch("./hidiffusion/v1/readout-version").then(r => r.ok ? r.json() : null).then(function(data) {
            if (data && typeof data.version === "number") {
                version = data.version;
            }
        }).catch(function() {});
    }

    onUiLoaded(function() {
        setInterval(function() {
            send("txt2img", JSON.stringify({version: version}));
            send("img2img", JSON.stringify({resize: resizeTab(), version: version}));
        }, 1000);
        setInterval(pollVersion, 3000);
    });
})();
