"""modules/shared.py / options.py (1.10.1): opts with add_option, OptionInfo, state."""


class OptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None,
                 refresh=None, comment_before="", comment_after="", infotext=None, restrict_api=False, category_id=None):
        self.default, self.label, self.component, self.component_args = default, label, component, component_args
        self.section, self.infotext, self.onchange = section, infotext, onchange
        self.comment_after = comment_after

    def info(self, info):
        self.comment_after += f"<span class='info'>({info})</span>"
        return self


class Options:
    def __init__(self):
        self.data, self.data_labels = {}, {}

    def add_option(self, key, info):
        assert isinstance(info.section, tuple), "section must be a tuple (the settings page crashes otherwise)"
        self.data_labels[key] = info
        self.data.setdefault(key, info.default)

    def set(self, key, value, is_api=False, run_callbacks=True):
        """options.py:144-171, less do_not_save/restrict_api: store, then the option's onchange."""
        if self.data.get(key, None) == value:
            return False
        self.data[key] = value
        option = self.data_labels[key]
        if run_callbacks and option.onchange is not None:
            option.onchange()
        return True

    def __getattr__(self, item):
        data = self.__dict__.get("data", {})
        if item in data:
            return data[item]
        labels = self.__dict__.get("data_labels", {})
        if item in labels:
            return labels[item].default
        raise AttributeError(item)


class State:
    interrupted = False
    skipped = False
    sampling_step = 0
    sampling_steps = 0


opts = Options()
state = State()
