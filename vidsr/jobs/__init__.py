"""Jobs: what runs where. Files and folders of inputs (`batch`) and chunks spread over Ray workers
(`distributed`), on top of the media pipeline."""
