"""The deterministic core: (run state, event) -> (new state, commands).

Pure, like h11: nothing in this package awaits, sleeps, reads a clock or does
I/O, and it imports nothing of flowkit but the ground floor and the blueprint
model it steps over. Every shell feeds it events and carries out its commands.
"""
