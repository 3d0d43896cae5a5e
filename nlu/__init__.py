"""Text side of huifang: what was asked, what was answered, and whether the answer is clear.

`nlu` works on text and timings only; it never touches audio, never reads the environment and never imports
`service`.
"""
