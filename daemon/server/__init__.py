"""The HTTP server and the listeners of one worker.

Read it in the order a request travels: ``listener`` (binding, one daemon
per port), ``serve`` (the worker's lifetime: accept loops, background tasks,
signals, drain), ``connection`` (one task per connection, the reaper),
``fastpath`` (snapshots answered from one lookup), ``h11path`` (everything
else, parsed by h11), ``dispatch`` (a parsed request to its encoded answer),
``framed`` (the binary ports' loop). ``state`` holds a connection's states
and their timeouts, ``limits`` the fixed limits, ``workers`` the supervisor
of N worker processes.
"""
