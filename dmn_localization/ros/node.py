"""
``dmn_localization_node``: the ROS 2 wrapper around the DMN localizer.

At this stage the node declares its parameters and serves ``~/build_map``: it decodes
and checks the posed context images, then answers honestly that no model is loaded
(the learned model and the per-frame filter arrive with later issues).
"""

from __future__ import annotations

from typing import Any, Optional

from dmn_localization.ros import image_conversion
from dmn_localization.ros.conversions import InvalidRequestError, parse_build_map_request
from dmn_localization.ros.parameters import declare_parameters, NODE_NAME
from dmn_localization_interfaces.srv import BuildMap
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


def resolve_device(requested: str) -> str:
    """Map the ``device`` parameter (auto, cpu, cuda) to the torch device to use."""
    import torch

    if requested == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if requested == 'cuda' and not torch.cuda.is_available():
        raise ValueError('parameter device is cuda but torch sees no CUDA device')
    return requested


class DmnLocalizationNode(Node):
    """Localizes the camera against a view-embedding map built by ``~/build_map``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.params = declare_parameters(self)
        self.device = resolve_device(self.params['device'])
        self.model: Optional[Any] = None
        self.build_map_service = self.create_service(
            BuildMap, '~/build_map', self._on_build_map)
        self.get_logger().info(
            f'started: device {self.device}, image conversion '
            f'{image_conversion.select_backend()}; no model loaded '
            f'(model_path {self.params["model_path"]!r})')

    def _on_build_map(self, request: BuildMap.Request,
                      response: BuildMap.Response) -> BuildMap.Response:
        try:
            views = parse_build_map_request(
                request, self.params['max_map_views'], self.params['global_frame_id'])
        except InvalidRequestError as exc:
            response.success, response.message = False, f'map not built: {exc}'
            self.get_logger().error(response.message)
            return response
        response.success = False
        response.num_views = 0
        response.fingerprint = ''
        response.message = (f'received {views.summary()} in frame {views.frame_id!r}; '
                            'no model is loaded, so no map was built')
        self.get_logger().warning(response.message)
        return response


def main(args: Optional[list] = None) -> None:
    """Run the node until shutdown (Ctrl-C or the ROS context ends)."""
    rclpy.init(args=args)
    node = None
    try:
        node = DmnLocalizationNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
