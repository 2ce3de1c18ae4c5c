"""Production models: immutable promoted versions behind one pointer, the writer claim that guards
them, and predictions from the serving version.
"""
