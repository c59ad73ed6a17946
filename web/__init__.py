"""vidsr Gradio web demo."""
