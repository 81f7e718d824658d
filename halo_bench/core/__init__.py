"""Infrastructure every stage uses: errors, console, atomic files and locks, devices, processes."""
