"""`waypost bench ...`: scripts that print figures (never timed tests). Each works in a scratch
directory of its own and changes nothing else.

    data       synthetic reads, plates, JPEGs and access records the others share
    store      reads stored per second
    audit      access-log appends and verification; the quarterly audit over a large log
    pipeline   frames per second and reads per pass on a rendered demo clip
    search     plate search latency at 10 million reads
    live_page  the live view's load time in chromium
    retention  the daily purge while officers search
    sync       batches to headquarters over loopback, push and pull
    forged_batch  what a forged batch costs headquarters, beside a genuine post's
    hq_search  search latency at headquarters
"""
