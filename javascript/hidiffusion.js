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
