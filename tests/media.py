"""Real faces in generated media: scikit-image's astronaut photo (shipped inside the package) placed
on a 640×480 background, moving, as a video file or an image sequence."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage import data

WIDTH, HEIGHT = 640, 480


def astronaut_bgr(side: int) -> np.ndarray:
    return cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (side, side), interpolation=cv2.INTER_AREA)


def face_frames(count: int, faces: int = 1, side: int = 260, step: int = 4) -> list[np.ndarray]:
    """`count` frames with `faces` copies of the astronaut, each sliding `step` pixels a frame to and
    fro in its own part of the width, so the faces never overlap."""
    portrait = astronaut_bgr(side)
    background = np.tile(np.linspace(40, 200, WIDTH, dtype=np.uint8)[None, :, None], (HEIGHT, 1, 3))
    lane = WIDTH // faces
    room = max(lane - side, 1)
    frames = []
    for index in range(count):
        frame = background.copy()
        travelled = (index * step) % (2 * room)
        offset = travelled if travelled < room else 2 * room - travelled
        for face in range(faces):
            x = min(face * lane + offset, WIDTH - side)
            y = (HEIGHT - side) // 2
            frame[y : y + side, x : x + side] = portrait
        frames.append(frame)
    return frames


def write_video(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    codec = {".mp4": "mp4v", ".avi": "MJPG"}[path.suffix]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def write_sequence(folder: Path, frames: list[np.ndarray]) -> str:
    """PNG files 0000.png, 0001.png, ...; returns the printf pattern OpenCV reads them by."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{index:04d}.png"), frame)
    return str(folder / "%04d.png")


def count_frames(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    return frames


def main() -> None:
    """`python -m tests.media --photo astronaut.jpg --clip clip.mp4`: a photo and a clip to try predict and video on."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--photo", type=Path, help="the astronaut photo, 512×512")
    parser.add_argument("--clip", type=Path, help="a 640×480 clip, .mp4 or .avi, with two faces moving")
    parser.add_argument("--frames", type=int, default=100)
    args = parser.parse_args()
    if args.photo:
        cv2.imwrite(str(args.photo), astronaut_bgr(512))
    if args.clip:
        write_video(args.clip, face_frames(args.frames, faces=2, side=220, step=2))


if __name__ == "__main__":
    main()
